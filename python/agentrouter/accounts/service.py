"""The accounts service: people, their sign-in and their sessions.

``AccountService`` is to accounts what ``KeyService`` is to keys: the CLI and the
management API (and, through it, the console) do everything through it; it keeps
the store, the mail, the throttle, the audit log and the keys of disabled people in
step. Built once per process by ``Core.from_settings`` as ``core.accounts``.

What an edge calls, by use (every method is documented where it is defined):

* Registration: ``register`` (same answer for a known and an unknown address),
  ``check_invitation``, ``verify_email``, ``resend_verification`` (by address,
  silent), ``send_verification`` (the signed-in user's own).
* The first admin: ``prepare_setup`` (``serve`` prints the link it returns while
  there is no user), ``setup_admin``; ``create_user`` for the CLI and admins.
* Sign-in: ``sign_in`` (email + password), ``sign_in_with_identity`` (after an
  OAuth callback), each returning ``SignedIn`` or ``SecondFactorRequired``;
  ``complete_sign_in`` takes the TOTP or recovery code of the latter.
* Sessions: ``authenticate_session`` (the cookie's token → ``SessionInfo`` with the
  ``Actor`` for the key service; on every management request), ``sign_out``,
  ``list_sessions``, ``end_session``, ``end_sessions`` (all, or all but this one).
* Passwords: ``change_password``, ``request_password_reset``, ``reset_password``,
  ``issue_reset_link`` (admin / CLI).
* Two-factor: ``begin_totp``, ``confirm_totp`` (returns the recovery codes, shown
  once), ``disable_totp``, ``renew_recovery_codes``, ``recovery_codes_left``.
* Identities: ``list_identities``, ``link_identity``, ``unlink_identity``.
* Administration: ``list_users``, ``get_user``, ``find_user``, ``set_role``,
  ``set_disabled``, ``delete_user``, ``create_invitation``, ``list_invitations``,
  ``revoke_invitation``, ``audit_events``.
* Manage keys owned by a person: ``actor_for_key`` gives the ``Actor`` they act as.

Links in mails are ``<public_url><path>?token=<token>`` with the paths below
(``VERIFY_PATH``…): pages of the console, which post the token to the API. A page
that shows such a link's target must send ``Referrer-Policy: no-referrer``.

The choices and their reasons:

* No account enumeration: ``register``, ``sign_in``, ``request_password_reset`` and
  ``resend_verification`` answer the same for a known and an unknown address, and
  spend the same Argon2 work (an unknown address is checked against a dummy hash;
  registering a known one still hashes the password, and mails the owner "someone
  tried to register" instead of a verification link). Mail goes out in the
  background, so its time does not show either.
* Throttling before hashing (``SignInThrottle``): a throttled attempt costs no
  Argon2 work, so a flood cannot buy CPU.
* Sessions are server-side: the cookie holds a random token, the store its HMAC
  digest; ending a session deletes its row, so the very next request with it is
  refused by every worker (each management request reads the store). A new token
  at each sign-in; the setup, reset and verification links never sign anyone in by
  themselves except the setup link, which creates the first admin.
* An email verified by a password reset link counts as verified (the mailbox
  received the link).
* A disabled user's sessions end and their keys are deleted (refused on the next
  ``/v1`` request through the shared revoked flags; enabling the user again does not
  bring the keys back). A deleted user's too.
"""

from __future__ import annotations

import base64
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import Final

import msgspec
import pyotp

from agentrouter.accounts.devices import MAX_USER_AGENT, device_label
from agentrouter.accounts.errors import (
    AccountDisabled,
    AccountInputError,
    AccountNotFound,
    Conflict,
    IdentityConflict,
    IdentityNotLinked,
    InvalidCredentials,
    InvalidSecondFactor,
    InvalidToken,
    LastSignInMethod,
    PermissionDenied,
    RegistrationClosed,
)
from agentrouter.accounts.mail import Mailer
from agentrouter.accounts.passwords import MAX_PASSWORD, PasswordHasher, check_password, user_words
from agentrouter.accounts.throttle import SignInThrottle
from agentrouter.accounts.tokens import Sealer, TokenDigester, new_token
from agentrouter.actor import Actor, instance_actor, user_actor
from agentrouter.audit import AuditLog
from agentrouter.config import Settings
from agentrouter.keys import KeyService
from agentrouter.store import Store
from agentrouter.store.models import (
    PROVIDERS,
    ROLES,
    AuditEvent,
    IdentityRow,
    InvitationRow,
    SessionRow,
    UserRow,
)

__all__ = [
    "INVITE_PATH",
    "RESET_PATH",
    "SETUP_PATH",
    "VERIFY_PATH",
    "AccountService",
    "CreatedInvitation",
    "SecondFactorRequired",
    "SessionInfo",
    "SignedIn",
    "TotpEnrollment",
    "normalize_email",
]

VERIFY_PATH: Final = "/verify-email"
RESET_PATH: Final = "/reset-password"
INVITE_PATH: Final = "/register"
SETUP_PATH: Final = "/setup"

DAY: Final = 86400.0
TOUCH_EVERY: Final = 60.0
"""A session's ``last_seen_at`` is written at most once a minute."""
MAX_EMAIL: Final = 254
MAX_DISPLAY_NAME: Final = 100
RECOVERY_CODES: Final = 10
TOTP_ISSUER: Final = "AgentRouter"
TOTP_PERIOD: Final = 30
TOTP_WINDOW: Final = 1
"""Codes of the previous and next 30-second step are accepted too (clock drift)."""

_EMAIL = re.compile(r"[^\s@\x00-\x1f\x7f]+@[^\s@\x00-\x1f\x7f]+\.[^\s@\x00-\x1f\x7f.]+")


class SignedIn(msgspec.Struct, kw_only=True):
    """A new session. ``token`` goes into the cookie and is never shown again."""

    user: UserRow
    session: SessionRow
    token: str


class SecondFactorRequired(msgspec.Struct, kw_only=True):
    """The first factor was right; ``complete_sign_in(pending_token=…, code=…)`` with a
    TOTP or recovery code before ``expires_at`` finishes the sign-in."""

    pending_token: str
    expires_at: float
    method: str
    """The first factor: password, github, google."""


class SessionInfo(msgspec.Struct, kw_only=True):
    """An authenticated session: its row, its user, and the ``Actor`` to pass on."""

    session: SessionRow
    user: UserRow
    actor: Actor


class TotpEnrollment(msgspec.Struct, kw_only=True):
    """A TOTP secret being enrolled: show ``uri`` as a QR code (or ``secret`` to type
    in), then ``confirm_totp`` with a code from the app."""

    secret: str
    uri: str


class CreatedInvitation(msgspec.Struct, kw_only=True):
    """A new invitation: ``link`` carries the token, shown once (and mailed when the
    invitation names an address)."""

    invitation: InvitationRow
    token: str
    link: str


def normalize_email(email: object) -> tuple[str, str]:
    """(the address as given, trimmed; its case-folded key) or ``AccountInputError``."""
    if not isinstance(email, str):
        raise AccountInputError("email must be text", field="email")
    shown = email.strip()
    if len(shown) > MAX_EMAIL or _EMAIL.fullmatch(shown) is None:
        raise AccountInputError("email must be an address like name@example.com", field="email")
    return shown, shown.casefold()


def _display_name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise AccountInputError("display_name must be text", field="display_name")
    if "\x00" in name:  # PostgreSQL text cannot hold one
        raise AccountInputError("display_name must not contain NUL characters", field="display_name")
    name = " ".join(name.split())
    if len(name) > MAX_DISPLAY_NAME:
        raise AccountInputError(f"display_name must be at most {MAX_DISPLAY_NAME} characters", field="display_name")
    return name or None


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


def _user_agent(ua: str | None) -> str | None:
    return ua[:MAX_USER_AGENT] if ua else None


class AccountService:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        secret: bytes,
        keys: KeyService,
        mailer: Mailer,
        throttle: SignInThrottle,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = store.accounts
        self._settings = settings
        self._acc = settings.accounts
        self._keys = keys
        self.mailer = mailer
        self.throttle = throttle
        self.hasher = hasher or PasswordHasher(
            time_cost=self._acc.password_time_cost,
            memory_cost=self._acc.password_memory_kib,
            parallelism=self._acc.password_parallelism,
            threads=self._acc.hash_threads,
        )
        self._tokens = TokenDigester(secret)
        self._sealer = Sealer(secret)
        self._clock = clock
        self.audit = AuditLog(self._db, clock)
        keys.use_audit(self.audit)

    async def aclose(self) -> None:
        """Deliver the queued mail and stop the hashing threads."""
        await self.mailer.aclose()
        self.hasher.close()

    def link(self, path: str, token: str) -> str:
        return f"{self._settings.base_url}{path}?token={token}"

    # -- registration --------------------------------------------------------------

    async def register(
        self,
        *,
        email: str,
        password: str,
        display_name: str | None = None,
        invitation: str | None = None,
        client_ip: str | None = None,
    ) -> None:
        """Register by email and password under the registration mode (``open``,
        ``domains``, ``invite`` with ``invitation`` a token from an invitation link).

        Returns nothing whether the address was new (a user is created, unverified,
        and mailed a verification link) or had an account already (its owner is
        mailed that someone tried to register): the same answer in about the same
        time. Raises ``AccountInputError`` / ``WeakPassword`` for bad input,
        ``RegistrationClosed`` when the mode refuses, ``InvalidToken`` for a bad
        invitation — none of which depends on whether the address is known.
        ``Throttled`` (before any strength estimate or hashing) past the client IP's
        quota of registrations."""
        self.throttle.check_registration(client_ip)
        shown, key = normalize_email(email)
        name = _display_name(display_name)
        check_password(password, user_inputs=user_words(shown, name))
        invitation_digest = await self._admit(key, invitation)
        password_hash = await self.hasher.hash(password)
        existing = await self._db.user_by_email(key)
        if existing is not None:
            self.mailer.send(
                existing.email,
                "Someone tried to register with your address",
                "Someone (perhaps you) tried to register an AgentRouter account with this address, "
                "but it already has one. Nothing was changed.\n\n"
                f"If it was you, sign in at {self._settings.base_url}/ , or set a new password here:\n"
                f"{self._settings.base_url}{RESET_PATH}\n\n"
                "If it was not you, you can ignore this mail.\n",
            )
            return
        user = await self._db.insert_user(
            id=_new_id("usr_"),
            email=shown,
            email_key=key,
            display_name=name,
            password_hash=password_hash,
            email_verified_at=None,
            role=await self._invited_role(invitation_digest),
            created_at=self._clock(),
            invitation=invitation_digest,
        )
        if user is None:  # taken meanwhile, or the invitation was used meanwhile: the same answer
            return
        await self.audit.record(
            "user_created", actor_name=user.id, user_id=user.id, method="password", client_ip=client_ip
        )
        await self._mail_verification(user)

    async def _admit(self, email_key: str, invitation: str | None) -> bytes | None:
        """The registration mode's verdict for an address: the invitation's digest to
        consume, None when none is needed; ``RegistrationClosed`` / ``InvalidToken``."""
        if invitation is not None:
            found = await self._live_invitation(invitation)
            if found.email is not None and found.email != email_key:
                raise RegistrationClosed(
                    "this invitation is for another email address; register with the address it was sent to",
                    field="email",
                )
            return self._tokens.digest(invitation)
        mode = self._acc.registration
        if mode == "open":
            return None
        if mode == "domains":
            domain = email_key.rpartition("@")[2]
            if domain in self._acc.registration_domains:
                return None
            raise RegistrationClosed(
                "registration is open to addresses of "
                + ", ".join(self._acc.registration_domains)
                + " only; ask an admin for an invitation",
                field="email",
            )
        raise RegistrationClosed("registration is by invitation only; ask an admin for an invitation link")

    async def _live_invitation(self, token: str) -> InvitationRow:
        digest = self._tokens.token_digest(token, "invite")
        found = None if digest is None else await self._db.invitation_by_digest(digest)
        if digest is None or found is None or not self._tokens.same(found[0], digest):
            raise InvalidToken("this invitation link is not valid; ask for a new one", field="invitation")
        row = found[1]
        if row.used_at is not None or row.expires_at <= self._clock():
            raise InvalidToken("this invitation was used already or has expired; ask for a new one", field="invitation")
        return row

    async def _invited_role(self, invitation_digest: bytes | None) -> str:
        if invitation_digest is None:
            return "member"
        found = await self._db.invitation_by_digest(invitation_digest)
        return found[1].role if found is not None else "member"

    async def check_invitation(self, token: str) -> InvitationRow:
        """The invitation behind a link (to show its address on the page), or
        ``InvalidToken``."""
        return await self._live_invitation(token)

    async def _mail_verification(self, user: UserRow) -> None:
        token = new_token("verify")
        now = self._clock()
        hours = self._acc.verification_hours
        await self._db.insert_token(
            digest=self._tokens.digest(token),
            kind="verify",
            user_id=user.id,
            email=user.email_key,
            now=now,
            expires_at=now + hours * 3600,
            replace=True,
        )
        self.mailer.send(
            user.email,
            "Verify your email address for AgentRouter",
            f"Hello{' ' + user.display_name if user.display_name else ''},\n\n"
            "please confirm that this address is yours by opening this link:\n\n"
            f"{self.link(VERIFY_PATH, token)}\n\n"
            f"The link works once, for {_hours(hours)}. Until then you can sign in but not create API keys.\n\n"
            "If you did not register, you can ignore this mail.\n",
        )

    async def verify_email(self, token: str, *, client_ip: str | None = None) -> UserRow:
        """Mark the address of the link's user verified (single use); ``InvalidToken``
        for an unknown, used or expired link, or one for an address the user no
        longer has."""
        digest = self._tokens.token_digest(token, "verify")
        row = None if digest is None else await self._db.take_token(digest, "verify", now=self._clock())
        user = None if row is None or row.user_id is None else await self._db.get_user(row.user_id)
        if user is None or row is None or row.email != user.email_key:
            raise InvalidToken(
                "this verification link is not valid, was used already or has expired; ask for a new one"
            )
        if not user.email_verified:
            await self._db.update_user(user.id, {"email_verified_at": self._clock()})
            await self.audit.record("email_verified", actor_name=user.id, user_id=user.id, client_ip=client_ip)
        found = await self._db.get_user(user.id)
        assert found is not None
        return found

    async def resend_verification(self, email: str) -> None:
        """Mail a new verification link to an unverified account with this address;
        nothing otherwise (the same answer either way)."""
        _shown, key = normalize_email(email)
        user = await self._db.user_by_email(key)
        if user is not None and not user.email_verified and not user.disabled:
            await self._mail_verification(user)

    async def send_verification(self, actor: Actor) -> None:
        """Mail the signed-in user a new verification link (the older ones stop working);
        ``Conflict`` when the address is verified already."""
        user = await self._self(actor)
        if user.email_verified:
            raise Conflict("your email address is verified already")
        await self._mail_verification(user)

    # -- the first admin -------------------------------------------------------------

    async def prepare_setup(self) -> str | None:
        """While there is no user: a new one-time setup link (the older ones stop
        working: valid until used or until the server restarts, which calls this
        again), else None. ``serve`` prints it."""
        await self._db.delete_tokens(kind="setup")
        if await self._db.count_users() > 0:
            return None
        token = new_token("setup")
        await self._db.insert_token(
            digest=self._tokens.digest(token),
            kind="setup",
            user_id=None,
            email=None,
            now=self._clock(),
            expires_at=None,
        )
        return self.link(SETUP_PATH, token)

    async def setup_admin(
        self,
        *,
        token: str,
        email: str,
        password: str,
        display_name: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> SignedIn:
        """Create the first admin with the setup link's token and sign them in. The
        address counts as verified (the operator vouches for it). ``InvalidToken``
        when the token is not the live setup token or a user exists already."""
        shown, key = normalize_email(email)
        name = _display_name(display_name)
        check_password(password, user_inputs=user_words(shown, name))
        digest = self._tokens.token_digest(token, "setup")
        if digest is None or await self._db.get_token(digest, "setup", now=self._clock()) is None:
            raise InvalidToken("this setup link is not valid (it works once, until the server restarts)")
        password_hash = await self.hasher.hash(password)
        now = self._clock()
        user = await self._db.insert_user(
            id=_new_id("usr_"),
            email=shown,
            email_key=key,
            display_name=name,
            password_hash=password_hash,
            email_verified_at=now,
            role="admin",
            created_at=now,
            only_if_no_users=True,
            setup_token=digest,
        )
        if user is None:
            raise InvalidToken("this setup link is not valid any more: the first admin exists")
        await self.audit.record(
            "user_created", actor_name="setup", user_id=user.id, method="setup", client_ip=client_ip
        )
        return await self._new_session(user, method="setup", client_ip=client_ip, user_agent=user_agent)

    async def create_user(
        self,
        actor: Actor,
        *,
        email: str,
        password: str | None = None,
        display_name: str | None = None,
        role: str = "member",
        verified: bool = True,
    ) -> tuple[UserRow, str | None]:
        """An admin's (or the CLI's) new user, whatever the registration mode; the
        address counts as verified unless ``verified`` is false. Without a password,
        the second value is a one-time link to set one (valid ``invitation_days``,
        also mailed). ``Conflict`` when the address has an account."""
        self._admin(actor)
        shown, key = normalize_email(email)
        name = _display_name(display_name)
        if role not in ROLES:
            raise AccountInputError(f"role must be one of: {', '.join(ROLES)}", field="role")
        password_hash = None
        if password is not None:
            check_password(password, user_inputs=user_words(shown, name))
            password_hash = await self.hasher.hash(password)
        now = self._clock()
        user = await self._db.insert_user(
            id=_new_id("usr_"),
            email=shown,
            email_key=key,
            display_name=name,
            password_hash=password_hash,
            email_verified_at=now if verified else None,
            role=role,
            created_at=now,
        )
        if user is None:
            raise Conflict(f"{shown} has an account already", field="email")
        await self.audit.record("user_created", actor=actor, user_id=user.id, detail={"role": role})
        link = None
        if password_hash is None:
            link = await self._reset_link(user, lifetime=self._acc.invitation_days * DAY, welcome=True)
        elif not verified:
            await self._mail_verification(user)
        return user, link

    # -- sign-in ---------------------------------------------------------------------

    async def sign_in(
        self, *, email: str, password: str, client_ip: str | None = None, user_agent: str | None = None
    ) -> SignedIn | SecondFactorRequired:
        """Email and password. ``Throttled`` (before any hashing) past the account's or
        the address's quota; ``InvalidCredentials`` for a wrong password, an unknown
        address or an account without a password (the same message and work);
        ``AccountDisabled`` (only with the right password). With TOTP on,
        ``SecondFactorRequired``."""
        _shown, key = normalize_email(email)
        self.throttle.check(account=key, client_ip=client_ip)
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise InvalidCredentials("wrong email or password")
        user = await self._db.user_by_email(key)
        if user is None or user.password_hash is None:
            await self.hasher.verify_dummy(password)
            await self.audit.record(
                "sign_in_failed",
                user_id=user.id if user else None,
                method="password",
                client_ip=client_ip,
                detail={"reason": "no password" if user else "unknown email"},
            )
            raise InvalidCredentials("wrong email or password")
        ok, rehash = await self.hasher.verify(user.password_hash, password)
        if not ok:
            await self.audit.record(
                "sign_in_failed",
                user_id=user.id,
                method="password",
                client_ip=client_ip,
                detail={"reason": "wrong password"},
            )
            raise InvalidCredentials("wrong email or password")
        if user.disabled:
            await self.audit.record(
                "sign_in_failed", user_id=user.id, method="password", client_ip=client_ip, detail={"reason": "disabled"}
            )
            raise AccountDisabled("this account is disabled; ask an admin")
        if rehash:
            new_hash = await self.hasher.hash(password)
            await self._db.update_user(
                user.id, {"password_hash": new_hash}, expect={"password_hash": user.password_hash}
            )
        return await self._first_factor_done(user, "password", client_ip, user_agent)

    async def _first_factor_done(
        self, user: UserRow, method: str, client_ip: str | None, user_agent: str | None
    ) -> SignedIn | SecondFactorRequired:
        if not user.totp_enabled:
            return await self._new_session(user, method=method, client_ip=client_ip, user_agent=user_agent)
        token = new_token("second_factor")
        now = self._clock()
        expires = now + self._acc.second_factor_minutes * 60
        await self._db.insert_token(
            digest=self._tokens.digest(token),
            kind="second_factor",
            user_id=user.id,
            email=None,
            now=now,
            expires_at=expires,
            detail={"method": method},
        )
        return SecondFactorRequired(pending_token=token, expires_at=expires, method=method)

    async def complete_sign_in(
        self, *, pending_token: str, code: str, client_ip: str | None = None, user_agent: str | None = None
    ) -> SignedIn:
        """Finish a sign-in that asked for a second factor: a TOTP code (6 digits) or a
        recovery code (used up). ``InvalidSecondFactor`` for a wrong or replayed code
        or an expired pending sign-in; ``Throttled`` past the account's quota."""
        digest = self._tokens.token_digest(pending_token, "second_factor")
        found = None if digest is None else await self._db.get_token(digest, "second_factor", now=self._clock())
        if digest is None or found is None or not self._tokens.same(found[0], digest) or found[1].user_id is None:
            raise InvalidSecondFactor("this sign-in has expired; sign in again")
        pending = found[1]
        assert pending.user_id is not None
        self.throttle.check(account=f"second-factor:{pending.user_id}", client_ip=client_ip)
        user = await self._db.get_user(pending.user_id)
        first = str(pending.detail.get("method", "password"))
        if user is None or user.disabled:
            raise InvalidSecondFactor("this sign-in has expired; sign in again")
        how = await self._check_second_factor(user, code)
        if how is None:
            await self.audit.record(
                "sign_in_failed",
                user_id=user.id,
                method=f"{first}+code",
                client_ip=client_ip,
                detail={"reason": "wrong code"},
            )
            raise InvalidSecondFactor("wrong or already used code", field="code")
        signed = await self._new_session(
            user, method=f"{first}+{how}", client_ip=client_ip, user_agent=user_agent, pending=digest
        )
        return signed

    async def _new_session(
        self,
        user: UserRow,
        *,
        method: str,
        client_ip: str | None,
        user_agent: str | None,
        pending: bytes | None = None,
    ) -> SignedIn:
        token = new_token("session")
        now = self._clock()
        ua = _user_agent(user_agent)
        session = await self._db.insert_session(
            id=_new_id("ses_"),
            digest=self._tokens.digest(token),
            user_id=user.id,
            method=method,
            now=now,
            expires_at=now + self._acc.session_days * DAY,
            client_ip=client_ip,
            user_agent=ua,
            device=device_label(ua),
            pending=pending,
        )
        if session is None:
            if pending is not None:
                raise InvalidSecondFactor("this sign-in has expired; sign in again")
            raise AccountDisabled("this account is disabled; ask an admin")
        await self.audit.record(
            "sign_in", actor_name=user.id, user_id=user.id, target=session.id, method=method, client_ip=client_ip
        )
        fresh = await self._db.get_user(user.id)
        return SignedIn(user=fresh or user, session=session, token=token)

    # -- sessions --------------------------------------------------------------------

    async def authenticate_session(
        self, token: str | None, *, client_ip: str | None = None, user_agent: str | None = None
    ) -> SessionInfo | None:
        """The live session of a cookie's token and its user, or None (unknown, ended,
        expired, a disabled user). Reads the store every time: a session ended anywhere
        is refused on its very next request. Updates ``last_seen_at`` at most once a
        minute."""
        digest = None if token is None else self._tokens.token_digest(token, "session")
        if digest is None:
            return None
        found = await self._db.session_by_digest(digest)
        if found is None:
            return None
        stored, session, user = found
        now = self._clock()
        if not self._tokens.same(stored, digest) or session.expires_at <= now or user.disabled:
            return None
        if now - session.last_seen_at >= TOUCH_EVERY:
            await self._db.touch_session(session.id, now, older_than=now - TOUCH_EVERY)
            session = msgspec.structs.replace(session, last_seen_at=now)
        actor = user_actor(user, via=f"session:{session.id}", client_ip=client_ip, user_agent=user_agent)
        return SessionInfo(session=session, user=user, actor=actor)

    async def sign_out(self, token: str, *, client_ip: str | None = None) -> bool:
        """End the session of this token; False when there was none."""
        info = await self.authenticate_session(token, client_ip=client_ip)
        if info is None:
            return False
        ended = await self._db.delete_sessions(info.user.id, session_id=info.session.id)
        if ended:
            await self.audit.record("sign_out", actor=info.actor, user_id=info.user.id, target=info.session.id)
        return bool(ended)

    async def list_sessions(self, actor: Actor, user_id: str | None = None) -> list[SessionRow]:
        """The live sessions of ``user_id`` (default: the actor's own), oldest first.
        Another user's: admins only (``AccountNotFound`` for a member)."""
        user = await self._visible_user(actor, user_id)
        return await self._db.list_sessions(user.id, now=self._clock())

    async def end_session(self, actor: Actor, session_id: str, *, user_id: str | None = None) -> None:
        """End one session of ``user_id`` (default: the actor's); ``AccountNotFound``
        when it is not one of theirs (or the actor may not see that user)."""
        user = await self._visible_user(actor, user_id)
        if not await self._db.delete_sessions(user.id, session_id=session_id):
            raise AccountNotFound(f"no session with id {session_id!r}")
        await self.audit.record("session_ended", actor=actor, user_id=user.id, target=session_id)

    async def end_sessions(self, actor: Actor, *, user_id: str | None = None, keep: str | None = None) -> int:
        """End every session of ``user_id`` (default: the actor's), but ``keep`` (a
        session id: "log out all other devices"). Returns how many ended."""
        user = await self._visible_user(actor, user_id)
        ended = await self._db.delete_sessions(user.id, except_id=keep)
        for session_id in ended:
            await self.audit.record(
                "session_ended", actor=actor, user_id=user.id, target=session_id, detail={"all": True}
            )
        return len(ended)

    # -- passwords -------------------------------------------------------------------

    async def change_password(
        self,
        actor: Actor,
        *,
        current: str | None,
        new: str,
        end_other_sessions: bool = False,
        current_session: str | None = None,
    ) -> int:
        """Change the actor's own password. ``current`` must be right (None only for
        an account without a password yet: an OAuth-only user adding one). With
        ``end_other_sessions`` every session but ``current_session`` ends. Returns
        how many sessions ended. ``Throttled`` past the account's quota."""
        user = await self._self(actor)
        check_password(new, user_inputs=user_words(user.email, user.display_name))
        if user.password_hash is not None:
            self.throttle.check(account=user.email_key, client_ip=actor.client_ip)
            ok = isinstance(current, str) and (await self.hasher.verify(user.password_hash, current))[0]
            if not ok:
                raise InvalidCredentials("the current password is wrong", field="current_password")
        new_hash = await self.hasher.hash(new)
        before = await self._db.list_sessions(user.id, now=self._clock()) if end_other_sessions else []
        await self._db.set_password(
            user.id, new_hash, now=self._clock(), end_sessions=end_other_sessions, keep=current_session
        )
        await self.audit.record("password_changed", actor=actor, user_id=user.id)
        ended = [s.id for s in before if s.id != current_session]
        for session_id in ended:
            await self.audit.record("session_ended", actor=actor, user_id=user.id, target=session_id)
        self.mailer.send(
            user.email,
            "Your AgentRouter password was changed",
            "The password of your AgentRouter account was just changed.\n\n"
            f"If it was not you, reset it at once: {self._settings.base_url}{RESET_PATH}\n",
        )
        return len(ended)

    async def request_password_reset(self, email: str, *, client_ip: str | None = None) -> None:
        """Mail a reset link to the account with this address, if any (and not
        disabled); the same answer and about the same time either way."""
        self.throttle.check_registration(client_ip)
        _shown, key = normalize_email(email)
        self.throttle.check(account=f"reset:{key}", client_ip=client_ip)
        user = await self._db.user_by_email(key)
        if user is None or user.disabled:
            self._tokens.digest(new_token("reset"))  # the same (tiny) work
            return
        await self._reset_link(user, lifetime=self._acc.reset_minutes * 60)

    async def _reset_link(self, user: UserRow, *, lifetime: float, welcome: bool = False) -> str:
        token = new_token("reset")
        now = self._clock()
        await self._db.insert_token(
            digest=self._tokens.digest(token),
            kind="reset",
            user_id=user.id,
            email=user.email_key,
            now=now,
            expires_at=now + lifetime,
            replace=True,
        )
        link = self.link(RESET_PATH, token)
        if welcome:
            subject = "Your AgentRouter account"
            text = (
                "An AgentRouter account was created for you. Choose your password here:\n\n"
                f"{link}\n\nThe link works once, for {_hours(lifetime / 3600)}.\n"
            )
        else:
            subject = "Reset your AgentRouter password"
            text = (
                "Someone (perhaps you) asked to reset the password of your AgentRouter account.\n\n"
                f"Choose a new password here:\n\n{link}\n\n"
                f"The link works once, for {_hours(lifetime / 3600)}. Using it signs out every device.\n\n"
                "If you did not ask, you can ignore this mail; your password stays as it is.\n"
            )
        self.mailer.send(user.email, subject, text)
        return link

    async def reset_password(self, token: str, new_password: str, *, client_ip: str | None = None) -> UserRow:
        """Set a new password with a reset link (single use). Every session of the
        user ends; the address counts as verified. ``InvalidToken`` for an unknown,
        used or expired link; ``WeakPassword`` (the link stays usable)."""
        digest = self._tokens.token_digest(token, "reset")
        found = None if digest is None else await self._db.get_token(digest, "reset", now=self._clock())
        user = None if found is None or found[1].user_id is None else await self._db.get_user(found[1].user_id)
        if digest is None or found is None or user is None or found[1].email != user.email_key or user.disabled:
            raise InvalidToken("this reset link is not valid, was used already or has expired; ask for a new one")
        check_password(new_password, user_inputs=user_words(user.email, user.display_name))
        if await self._db.take_token(digest, "reset", now=self._clock()) is None:
            raise InvalidToken("this reset link is not valid, was used already or has expired; ask for a new one")
        new_hash = await self.hasher.hash(new_password)
        sessions = await self._db.list_sessions(user.id, now=self._clock())
        await self._db.set_password(user.id, new_hash, now=self._clock(), end_sessions=True, keep=None)
        if not user.email_verified:
            await self._db.update_user(user.id, {"email_verified_at": self._clock()})
        await self.audit.record("password_reset", actor_name=user.id, user_id=user.id, client_ip=client_ip)
        for s in sessions:
            await self.audit.record(
                "session_ended", actor_name=user.id, user_id=user.id, target=s.id, client_ip=client_ip
            )
        fresh = await self._db.get_user(user.id)
        assert fresh is not None
        return fresh

    async def issue_reset_link(self, actor: Actor, user_id: str) -> str:
        """An admin's (or the CLI's) reset link for a user, also mailed to them; valid
        ``reset_minutes``."""
        self._admin(actor)
        user = await self._user(user_id)
        return await self._reset_link(user, lifetime=self._acc.reset_minutes * 60)

    # -- two-factor (TOTP) -----------------------------------------------------------

    async def begin_totp(self, actor: Actor) -> TotpEnrollment:
        """Start enrolling TOTP: a new secret (sealed in the store), to confirm with a
        code. ``Conflict`` when TOTP is on already."""
        user = await self._self(actor)
        if user.totp_enabled:
            raise Conflict("two-factor sign-in is on already; turn it off first to enroll again")
        secret = pyotp.random_base32(32)
        await self._db.update_user(
            user.id, {"totp_secret": self._sealer.seal(secret.encode(), user.id), "totp_last_step": None}
        )
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)
        return TotpEnrollment(secret=secret, uri=uri)

    async def confirm_totp(self, actor: Actor, code: str) -> list[str]:
        """Turn TOTP on with a code from the app; returns the ``RECOVERY_CODES`` one-time
        recovery codes (shown once, stored as digests). ``InvalidSecondFactor`` for a
        wrong code, ``Conflict`` with no enrolment under way."""
        user = await self._self(actor)
        if user.totp_enabled:
            raise Conflict("two-factor sign-in is on already")
        if user.totp_secret is None:
            raise Conflict("start the enrolment first")
        if await self._check_totp(user, code) is None:
            raise InvalidSecondFactor("wrong code; check the time of your device and try again", field="code")
        codes = await self._new_recovery_codes(user)
        await self._db.update_user(user.id, {"totp_enabled_at": self._clock()})
        await self.audit.record("totp_enabled", actor=actor, user_id=user.id)
        return codes

    async def disable_totp(self, actor: Actor, *, code: str | None = None, user_id: str | None = None) -> None:
        """Turn TOTP off: the user's own with a current TOTP or recovery code; an
        admin's for another user (locked out) without one."""
        target = await self._visible_user(actor, user_id)
        own = target.id == actor.user_id
        if own or not actor.is_admin:
            if not target.totp_enabled:
                raise Conflict("two-factor sign-in is off")
            if code is None or await self._check_second_factor(target, code) is None:
                raise InvalidSecondFactor("wrong or already used code", field="code")
        await self._db.disable_totp(target.id)
        await self.audit.record("totp_disabled", actor=actor, user_id=target.id)

    async def renew_recovery_codes(self, actor: Actor, code: str) -> list[str]:
        """New recovery codes (the old ones stop working), with a current TOTP code."""
        user = await self._self(actor)
        if not user.totp_enabled:
            raise Conflict("two-factor sign-in is off")
        if await self._check_totp(user, code) is None:
            raise InvalidSecondFactor("wrong code", field="code")
        codes = await self._new_recovery_codes(user)
        await self.audit.record("recovery_codes_renewed", actor=actor, user_id=user.id)
        return codes

    async def recovery_codes_left(self, actor: Actor) -> int:
        user = await self._self(actor)
        return await self._db.recovery_codes_left(user.id)

    async def _new_recovery_codes(self, user: UserRow) -> list[str]:
        codes = []
        for _ in range(RECOVERY_CODES):
            raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits
            codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
        await self._db.replace_recovery_codes(user.id, [self._recovery_digest(user.id, c) for c in codes])
        return codes

    def _recovery_digest(self, user_id: str, code: str) -> bytes:
        normal = "".join(c for c in code.lower() if c.isalnum())
        return self._tokens.digest(f"recovery:{user_id}:{normal}")

    async def _check_second_factor(self, user: UserRow, code: object) -> str | None:
        """ "totp" or "recovery_code" when ``code`` is a valid one (used up), else None."""
        if not isinstance(code, str) or len(code) > 64:
            return None
        digits = "".join(code.split())
        if digits.isascii() and digits.isdigit() and len(digits) == 6:
            return "totp" if await self._check_totp(user, digits) is not None else None
        used = await self._db.use_recovery_code(user.id, self._recovery_digest(user.id, code), now=self._clock())
        return "recovery_code" if used else None

    async def _check_totp(self, user: UserRow, code: object) -> int | None:
        """The time step of a valid, unused TOTP code (then recorded), else None."""
        if user.totp_secret is None or not isinstance(code, str):
            return None
        code = "".join(code.split())
        secret = self._sealer.open(user.totp_secret, user.id)
        if secret is None or not (code.isascii() and code.isdigit() and len(code) == 6):  # "١٢٣٤٥٦" is digits too
            return None
        totp = pyotp.TOTP(secret.decode())
        now_step = math.floor(self._clock() / TOTP_PERIOD)
        for step in range(now_step - TOTP_WINDOW, now_step + TOTP_WINDOW + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                return step if await self._db.accept_totp_step(user.id, step) else None
        return None

    # -- OAuth identities ------------------------------------------------------------

    async def sign_in_with_identity(
        self,
        *,
        provider: str,
        subject: str,
        email: str | None,
        email_verified: bool,
        display_name: str | None = None,
        invitation: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> SignedIn | SecondFactorRequired:
        """Sign in after a provider's callback; ``subject`` is the provider's stable
        id (GitHub's ``id``, Google's ``sub``), ``email`` the address it gives and
        whether it says the address is verified.

        A linked identity signs its user in. A first sign-in whose verified address
        belongs to an account links to it only when that account's address is
        verified too, else ``IdentityNotLinked`` (the message says how to link from
        the account's settings). A first sign-in with a new address creates a user
        under the registration mode (``RegistrationClosed``; a verified address is
        needed) with that address verified. ``AccountDisabled``; with TOTP on,
        ``SecondFactorRequired``."""
        provider = _provider(provider)
        subject = _subject(subject)
        identity = await self._db.get_identity(provider, subject)
        if identity is not None:
            user = await self._db.get_user(identity.user_id)
            assert user is not None
            if user.disabled:
                await self.audit.record(
                    "sign_in_failed",
                    user_id=user.id,
                    method=provider,
                    client_ip=client_ip,
                    detail={"reason": "disabled"},
                )
                raise AccountDisabled("this account is disabled; ask an admin")
            await self._db.touch_identity(provider, subject, email=email, now=self._clock())
            return await self._first_factor_done(user, provider, client_ip, user_agent)
        label = provider.title() if provider != "github" else "GitHub"
        if not email or not email_verified:
            raise RegistrationClosed(
                f"your {label} account has no verified email address; verify one with {label} and try again"
            )
        shown, key = normalize_email(email)
        user = await self._db.user_by_email(key)
        if user is not None:
            if not user.email_verified:
                raise IdentityNotLinked(
                    f"an account with {shown} exists but its address is not verified yet: sign in with your password, "
                    f"verify the address, then link {label} from your account settings"
                )
            if user.disabled:
                raise AccountDisabled("this account is disabled; ask an admin")
            if not await self._db.insert_identity(
                provider=provider, subject=subject, user_id=user.id, email=shown, now=self._clock()
            ):
                raise IdentityConflict(f"this {label} account is linked to another account already")
            await self.audit.record(
                "identity_linked",
                actor_name=user.id,
                user_id=user.id,
                target=f"{provider}:{subject}",
                method=provider,
                client_ip=client_ip,
                detail={"automatic": True},
            )
            return await self._first_factor_done(user, provider, client_ip, user_agent)
        invitation_digest = await self._admit(key, invitation)
        now = self._clock()
        created = await self._db.insert_user(
            id=_new_id("usr_"),
            email=shown,
            email_key=key,
            display_name=_display_name(display_name),
            password_hash=None,
            email_verified_at=now,
            role=await self._invited_role(invitation_digest),
            created_at=now,
            invitation=invitation_digest,
            identity=(provider, subject, shown),
        )
        if created is None:
            raise IdentityConflict("this account was just created by another sign-in; sign in again")
        await self.audit.record(
            "user_created", actor_name=created.id, user_id=created.id, method=provider, client_ip=client_ip
        )
        await self.audit.record(
            "identity_linked",
            actor_name=created.id,
            user_id=created.id,
            target=f"{provider}:{subject}",
            method=provider,
        )
        return await self._first_factor_done(created, provider, client_ip, user_agent)

    async def list_identities(self, actor: Actor, user_id: str | None = None) -> list[IdentityRow]:
        user = await self._visible_user(actor, user_id)
        return await self._db.list_identities(user.id)

    async def link_identity(
        self, actor: Actor, *, provider: str, subject: str, email: str | None = None
    ) -> IdentityRow:
        """Link a provider's identity to the signed-in user (after an OAuth round trip
        the web layer made for this user). ``IdentityConflict`` when it is linked to
        anyone already."""
        user = await self._self(actor)
        provider, subject = _provider(provider), _subject(subject)
        if not await self._db.insert_identity(
            provider=provider, subject=subject, user_id=user.id, email=email, now=self._clock()
        ):
            existing = await self._db.get_identity(provider, subject)
            if existing is not None and existing.user_id == user.id:
                return existing
            raise IdentityConflict("this account of the provider is linked to another AgentRouter account")
        await self.audit.record(
            "identity_linked", actor=actor, user_id=user.id, target=f"{provider}:{subject}", method=provider
        )
        found = await self._db.get_identity(provider, subject)
        assert found is not None
        return found

    async def unlink_identity(self, actor: Actor, *, provider: str, subject: str, user_id: str | None = None) -> None:
        """Unlink an identity of ``user_id`` (default: the actor's own).
        ``LastSignInMethod`` when it is their only way to sign in (no password, no
        other identity); ``AccountNotFound`` when it is not theirs."""
        user = await self._visible_user(actor, user_id)
        outcome = await self._db.delete_identity(user.id, _provider(provider), str(subject), keep_one_way=True)
        if outcome == "missing":
            raise AccountNotFound(f"no {provider} identity {subject!r} on this account")
        if outcome == "last":
            raise LastSignInMethod(
                "this is the account's only way to sign in: set a password or link another provider first"
            )
        await self.audit.record("identity_unlinked", actor=actor, user_id=user.id, target=f"{provider}:{subject}")

    # -- administration --------------------------------------------------------------

    async def list_users(self, actor: Actor) -> list[UserRow]:
        """Every user (admins); a member gets ``PermissionDenied``."""
        self._admin(actor)
        return await self._db.list_users()

    async def get_user(self, actor: Actor, user_id: str) -> UserRow:
        """A user the actor may see (themselves; anyone for an admin), else
        ``AccountNotFound``."""
        return await self._visible_user(actor, user_id)

    async def find_user(self, actor: Actor, email: str) -> UserRow:
        """The user with this address (admins: the CLI's ``users show EMAIL``)."""
        self._admin(actor)
        _shown, key = normalize_email(email)
        user = await self._db.user_by_email(key)
        if user is None:
            raise AccountNotFound(f"no user with email {email!r}")
        return user

    async def me(self, actor: Actor) -> UserRow:
        """The actor's own account (a user actor)."""
        return await self._self(actor)

    async def set_display_name(self, actor: Actor, display_name: str | None) -> UserRow:
        """Change the actor's own display name (blank or None clears it)."""
        user = await self._self(actor)
        await self._db.update_user(user.id, {"display_name": _display_name(display_name)})
        return await self._self(actor)

    async def set_role(self, actor: Actor, user_id: str, role: str) -> UserRow:
        """Make a user ``admin`` or ``member``. ``Conflict`` when it would leave no
        enabled admin."""
        self._admin(actor)
        if role not in ROLES:
            raise AccountInputError(f"role must be one of: {', '.join(ROLES)}", field="role")
        user = await self._user(user_id)
        if user.role == role:
            return user
        if (
            user.role == "admin"
            and not user.disabled
            and await self._db.count_users(role="admin", enabled_only=True) <= 1
        ):
            raise Conflict("this is the last admin; make another user admin first")
        await self._db.update_user(user.id, {"role": role})
        await self.audit.record("role_changed", actor=actor, user_id=user.id, detail={"from": user.role, "to": role})
        return await self._user(user.id)

    async def set_disabled(self, actor: Actor, user_id: str, disabled: bool) -> UserRow:
        """Disable a user (every session ends at once, their keys are deleted) or
        enable them again (their keys stay deleted). ``Conflict`` for the last admin
        or the actor's own account."""
        self._admin(actor)
        user = await self._user(user_id)
        if disabled:
            if user.id == actor.user_id:
                raise Conflict("you cannot disable your own account")
            if (
                user.role == "admin"
                and not user.disabled
                and await self._db.count_users(role="admin", enabled_only=True) <= 1
            ):
                raise Conflict("this is the last admin; make another user admin first")
        if user.disabled == disabled:
            return user
        await self._db.set_disabled(user.id, disabled)
        await self.audit.record("user_disabled" if disabled else "user_enabled", actor=actor, user_id=user.id)
        if disabled:
            await self._keys.revoke_owned(user.id, actor=actor, reason="owner disabled")
        return await self._user(user.id)

    async def delete_user(self, actor: Actor, user_id: str) -> None:
        """Delete a user: their keys are deleted first (refused on the next request),
        then the user with their sessions, identities and codes. Audit events stay."""
        self._admin(actor)
        user = await self._user(user_id)
        if user.id == actor.user_id:
            raise Conflict("you cannot delete your own account")
        if (
            user.role == "admin"
            and not user.disabled
            and await self._db.count_users(role="admin", enabled_only=True) <= 1
        ):
            raise Conflict("this is the last admin; make another user admin first")
        await self._db.set_disabled(user.id, True)  # no new session or key while the keys go
        await self._keys.revoke_owned(user.id, actor=actor, reason="owner deleted")
        await self._db.delete_user(user.id)
        await self.audit.record("user_deleted", actor=actor, user_id=user.id, detail={"email": user.email})

    async def create_invitation(
        self, actor: Actor, *, email: str | None = None, role: str = "member", days: float | None = None
    ) -> CreatedInvitation:
        """An invitation link (single use, valid ``days`` or ``invitation_days``),
        bound to ``email`` when given (then also mailed there)."""
        self._admin(actor)
        if role not in ROLES:
            raise AccountInputError(f"role must be one of: {', '.join(ROLES)}", field="role")
        shown = key = None
        if email is not None:
            shown, key = normalize_email(email)
        lifetime = (days if days is not None else self._acc.invitation_days) * DAY
        if not (lifetime > 0 and math.isfinite(lifetime)):
            raise AccountInputError("days must be a positive number", field="days")
        token = new_token("invite")
        now = self._clock()
        row = await self._db.insert_invitation(
            id=_new_id("inv_"),
            digest=self._tokens.digest(token),
            email=key,
            role=role,
            created_by=actor.user_id,
            now=now,
            expires_at=now + lifetime,
        )
        link = self.link(INVITE_PATH, token)
        await self.audit.record(
            "invitation_created", actor=actor, target=row.id, detail={"role": role, "bound": key is not None}
        )
        if shown is not None:
            self.mailer.send(
                shown,
                "You are invited to AgentRouter",
                f"You are invited to create an AgentRouter account{' as an admin' if role == 'admin' else ''}:\n\n"
                f"{link}\n\nThe link works once, for {_hours(lifetime / 3600)}.\n",
            )
        return CreatedInvitation(invitation=row, token=token, link=link)

    async def list_invitations(self, actor: Actor) -> list[InvitationRow]:
        self._admin(actor)
        return await self._db.list_invitations()

    async def revoke_invitation(self, actor: Actor, invitation_id: str) -> None:
        self._admin(actor)
        if not await self._db.revoke_invitation(invitation_id, now=self._clock()):
            raise AccountNotFound(f"no open invitation with id {invitation_id!r}")

    async def audit_events(
        self,
        actor: Actor,
        *,
        user_id: str | None = None,
        event: str | None = None,
        before: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Newest first: a member's own events; an admin's all (or ``user_id``'s), in
        [``since``, ``until``)."""
        return await self.audit.events(
            actor, user_id=user_id, event=event, before=before, since=since, until=until, limit=limit
        )

    async def actor_for_key(self, key_id: str, *, client_ip: str | None = None) -> Actor:
        """The actor a manage key acts as: its owner (with the owner's current role),
        or the operator for an instance key. A key whose owner is disabled or gone
        acts as nobody: ``AccountDisabled`` (its keys are deleted anyway)."""
        row = await self._keys.get(key_id)
        via = f"key:{key_id}"
        if row.owner is None:
            return instance_actor(via=via, client_ip=client_ip)
        user = await self._db.get_user(row.owner)
        if user is None or user.disabled:
            raise AccountDisabled("the owner of this key is disabled")
        return user_actor(user, via=via, client_ip=client_ip)

    async def prune(self) -> int:
        """Delete expired sessions and tokens; returns how many sessions."""
        return await self._db.prune(self._clock())

    # -- helpers ---------------------------------------------------------------------

    def _admin(self, actor: Actor) -> None:
        if not actor.is_admin:
            raise PermissionDenied("only an admin can do this")

    async def _user(self, user_id: str) -> UserRow:
        user = await self._db.get_user(user_id)
        if user is None:
            raise AccountNotFound(f"no user with id {user_id!r}")
        return user

    async def _self(self, actor: Actor) -> UserRow:
        if actor.user_id is None:
            raise PermissionDenied("this needs a signed-in user (a session), not an instance key")
        user = await self._db.get_user(actor.user_id)
        if user is None or user.disabled:
            raise AccountNotFound("this account does not exist any more")
        return user

    async def _visible_user(self, actor: Actor, user_id: str | None) -> UserRow:
        """``user_id``'s user (default: the actor's own) when the actor may see it,
        else ``AccountNotFound`` (a member asking about anyone else)."""
        if user_id is None or user_id == actor.user_id:
            return await self._self(actor)
        if not actor.is_admin:
            raise AccountNotFound(f"no user with id {user_id!r}")
        return await self._user(user_id)


def _provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise AccountInputError(f"provider must be one of: {', '.join(PROVIDERS)}", field="provider")
    return provider


def _subject(subject: object) -> str:
    text = str(subject) if isinstance(subject, int | str) else ""
    if not text or len(text) > 255:
        raise AccountInputError("the provider's subject (user id) is missing or too long", field="subject")
    return text


def _hours(hours: float) -> str:
    if hours >= 48 and hours % 24 == 0:
        return f"{int(hours // 24)} days"
    if hours >= 1:
        return f"{hours:g} hours" if hours != 1 else "1 hour"
    return f"{round(hours * 60)} minutes"
