"""The account operations of ``/api/v1``: sign-in and its cookie, the caller's own
account (``/me``: profile, password, sessions, identities, two-factor), the admins'
users and invitations, and the audit log. Each goes through ``core.accounts``
(``agentrouter.accounts.service``); this module only turns HTTP into its calls and
its answers into the API's bodies and cookies.

The session token reaches the browser only in ``Set-Cookie`` (``api.web``); the
answer of a sign-in carries the session's CSRF token for the ``X-CSRF-Token``
header. A sign-in from a browser that has a session already ends that session
first, so one device never holds two.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

import msgspec

from agentrouter.api.account_schemas import (
    Accepted,
    AuditEntry,
    AuditList,
    AuditQuery,
    AuthorizeUrl,
    CodeBody,
    CreatedInvitation,
    Done,
    EmailBody,
    Identity,
    IdentityList,
    Invitation,
    InvitationCreate,
    InvitationList,
    LinkQuery,
    MeUpdate,
    OAuthCallbackQuery,
    OAuthStartQuery,
    PasswordChange,
    Providers,
    RecoveryCodes,
    RegisterBody,
    ResendBody,
    ResetConfirmBody,
    Session,
    SessionEnded,
    SessionList,
    SetupBody,
    SignInBody,
    SignInResult,
    TokenBody,
    TotpEnrollment,
    TwoFactorBody,
    User,
    UserList,
    UsersQuery,
    UserUpdate,
    Whoami,
)
from agentrouter.api.caller import Caller
from agentrouter.api.errors import ApiError
from agentrouter.api.oauth import STATE_COOKIE, OAuthError, safe_next
from agentrouter.api.params import decode_cursor, encode_cursor, parse_time
from agentrouter.api.routes import Context, Operation, Reply, Request
from agentrouter.api.web import csrf_token

if TYPE_CHECKING:
    from agentrouter.accounts.service import AccountService, SecondFactorRequired, SignedIn
    from agentrouter.store.models import AuditEvent, IdentityRow, InvitationRow, SessionRow, UserRow

__all__ = ["ACCOUNT_OPERATIONS", "OAUTH_ERROR_CODES", "SIGN_IN_PAGE", "TWO_FACTOR_COOKIE", "TWO_FACTOR_PAGE"]

log = logging.getLogger("agentrouter.oauth")

TWO_FACTOR_COOKIE: Final = "agentrouter_2fa"
"""Holds the pending sign-in of an OAuth callback that needs a TOTP code (HttpOnly,
minutes): the two-factor step takes it when the body has no ``two_factor_token``."""
TWO_FACTOR_PAGE: Final = "/sign-in/two-factor"
SIGN_IN_PAGE: Final = "/sign-in"
ACCOUNT_PAGE: Final = "/account"
"""Where a refused OAuth callback sends the browser (``ACCOUNT_PAGE`` when linking),
with ``oauth_error=<code>`` (one of ``OAUTH_ERROR_CODES``) that the page words."""
OAUTH_ERROR_CODES: Final = frozenset(
    {
        "state",  # the state cookie missing, expired, not ours, or another state
        "denied",  # cancelled at the provider (error=access_denied)
        "provider_error",  # the provider sent another error to the callback
        "provider_unavailable",  # unreachable, or it answered nonsense (502)
        "not_configured",  # no such provider here
        "code",  # the provider refused the code exchange (used, or PKCE)
        "id_token",  # Google's ID token refused
        "unverified_email",  # the provider vouches for no email address
        "link_signed_out",  # linking, but the account that started it is not signed in
        "identity_not_linked",
        "identity_conflict",
        "account_disabled",
        "registration_closed",
        "too_many_attempts",
        "busy",
        "account_error",
    }
)
"""Where an OAuth sign-in that needs a code sends the browser (a console page)."""

_REGISTER_ACCEPTED = (
    "If this address can register, a verification link is on its way to it; open it to finish. "
    "(If the address has an account already, its owner was told instead.)"
)
_RESEND_ACCEPTED = "If an unverified account has this address, a new verification link is on its way."
_RESET_ACCEPTED = "If an account has this address, a link to reset its password is on its way."


def _accounts(ctx: Context) -> AccountService:
    accounts = ctx.core.accounts
    if accounts is None:
        raise ApiError(503, "Accounts are not available on this server.")
    return accounts


def _caller(req: Request) -> Caller:
    caller = req.caller
    assert isinstance(caller, Caller)
    return caller


# -- conversions ------------------------------------------------------------------


def user_out(u: UserRow) -> User:
    return User(
        id=u.id,
        email=u.email,
        display_name=u.display_name,
        role=u.role,
        email_verified=u.email_verified,
        email_verified_at=u.email_verified_at,
        disabled=u.disabled,
        has_password=u.has_password,
        two_factor_enabled=u.totp_enabled,
        created_at=u.created_at,
        last_login_at=u.last_login_at,
    )


def session_out(s: SessionRow, current: str | None) -> Session:
    return Session(
        id=s.id,
        method=s.method,
        created_at=s.created_at,
        last_seen_at=s.last_seen_at,
        expires_at=s.expires_at,
        client_ip=s.client_ip,
        user_agent=s.user_agent,
        device=s.device,
        current=s.id == current,
    )


def identity_out(i: IdentityRow) -> Identity:
    return Identity(
        id=f"{i.provider}:{i.subject}",
        provider=i.provider,
        subject=i.subject,
        email=i.email,
        created_at=i.created_at,
        last_used_at=i.last_used_at,
    )


def invitation_out(i: InvitationRow) -> Invitation:
    return Invitation(
        id=i.id,
        email=i.email,
        role=i.role,
        created_by=i.created_by,
        created_at=i.created_at,
        expires_at=i.expires_at,
        used_at=i.used_at,
        used_by=i.used_by,
    )


def audit_out(e: AuditEvent) -> AuditEntry:
    return AuditEntry(
        id=e.id,
        time=e.time,
        event=e.event,
        actor=e.actor,
        user_id=e.user_id,
        target=e.target,
        method=e.method,
        client_ip=e.client_ip,
        detail=e.detail,
    )


def _current_session(caller: Caller) -> str | None:
    return caller.session.session.id if caller.session is not None else None


# -- the cookie of a sign-in ----------------------------------------------------------


async def _end_previous(ctx: Context, caller: Caller) -> None:
    """A new sign-in in a browser that has a session: end the old one (one session per
    device, and a planted cookie never survives a sign-in)."""
    if caller.token is not None:
        await _accounts(ctx).sign_out(caller.token, client_ip=caller.client_ip)


def _signed_in_headers(ctx: Context, signed: SignedIn) -> list[tuple[bytes, bytes]]:
    cookies = ctx.cookies
    return [
        cookies.set_session(signed.token, signed.session.expires_at - ctx.now()),
        cookies.clear_named(TWO_FACTOR_COOKIE),
    ]


def _sign_in_reply(ctx: Context, result: SignedIn | SecondFactorRequired) -> Reply:
    from agentrouter.accounts.service import SignedIn

    if isinstance(result, SignedIn):
        body = SignInResult(
            status="signed_in",
            user=user_out(result.user),
            session=session_out(result.session, result.session.id),
            csrf_token=csrf_token(ctx.core.digester, result.token),
        )
        return Reply(body, headers=_signed_in_headers(ctx, result))
    max_age = result.expires_at - ctx.now()
    return Reply(
        SignInResult(status="two_factor_required", two_factor_token=result.pending_token, expires_at=result.expires_at),
        headers=[ctx.cookies.set_named(TWO_FACTOR_COOKIE, result.pending_token, max_age, same_site="Strict")],
    )


# -- sign-in and registration (public) ----------------------------------------------


async def providers(ctx: Context, req: Request) -> Reply:
    return Reply(
        Providers(
            password=True,
            providers=list(ctx.oauth.offered),  # type: ignore[arg-type]
            registration=ctx.settings.accounts.registration,
        )
    )


async def register(ctx: Context, req: Request) -> Reply:
    b: RegisterBody = req.body
    caller = _caller(req)
    await _accounts(ctx).register(
        email=b.email,
        password=b.password,
        display_name=b.display_name,
        invitation=b.invitation,
        client_ip=caller.client_ip,
    )
    return Reply(Accepted(message=_REGISTER_ACCEPTED), 202)


async def check_invitation(ctx: Context, req: Request) -> Reply:
    b: TokenBody = req.body
    return Reply(invitation_out(await _accounts(ctx).check_invitation(b.token)))


async def verify_email(ctx: Context, req: Request) -> Reply:
    b: TokenBody = req.body
    user = await _accounts(ctx).verify_email(b.token, client_ip=_caller(req).client_ip)
    return Reply(Done(message=f"{user.email} is verified."))


async def resend_verification(ctx: Context, req: Request) -> Reply:
    b: ResendBody = req.body
    caller = _caller(req)
    accounts = _accounts(ctx)
    if b.email is None:
        if caller.actor is None or caller.actor.user_id is None:
            raise ApiError(422, "email: required when not signed in", field="email")
        caller.need_csrf()
        await accounts.send_verification(caller.actor)
        return Reply(Accepted(message="A new verification link is on its way to your address."), 202)
    await accounts.resend_verification(b.email)
    return Reply(Accepted(message=_RESEND_ACCEPTED), 202)


async def sign_in(ctx: Context, req: Request) -> Reply:
    b: SignInBody = req.body
    caller = _caller(req)
    result = await _accounts(ctx).sign_in(
        email=b.email, password=b.password, client_ip=caller.client_ip, user_agent=caller.user_agent
    )
    await _end_previous(ctx, caller)
    return _sign_in_reply(ctx, result)


async def two_factor(ctx: Context, req: Request) -> Reply:
    b: TwoFactorBody = req.body
    caller = _caller(req)
    pending = b.two_factor_token or ctx.cookies.named(req.cookies, TWO_FACTOR_COOKIE)
    if not pending:
        raise ApiError(
            422, "two_factor_token: required (from the sign-in's answer); sign in again", field="two_factor_token"
        )
    result = await _accounts(ctx).complete_sign_in(
        pending_token=pending, code=b.code, client_ip=caller.client_ip, user_agent=caller.user_agent
    )
    await _end_previous(ctx, caller)
    return _sign_in_reply(ctx, result)


async def sign_out(ctx: Context, req: Request) -> Reply:
    caller = _caller(req)
    caller.need_csrf()  # a live session's; a dead cookie is only cleared
    if caller.token is not None:
        await _accounts(ctx).sign_out(caller.token, client_ip=caller.client_ip)
    return Reply(Done(message="Signed out."), headers=[ctx.cookies.clear_session()])


async def request_reset(ctx: Context, req: Request) -> Reply:
    b: EmailBody = req.body
    await _accounts(ctx).request_password_reset(b.email, client_ip=_caller(req).client_ip)
    return Reply(Accepted(message=_RESET_ACCEPTED), 202)


async def confirm_reset(ctx: Context, req: Request) -> Reply:
    b: ResetConfirmBody = req.body
    caller = _caller(req)
    await _accounts(ctx).reset_password(b.token, b.password, client_ip=caller.client_ip)
    headers = [ctx.cookies.clear_session()] if caller.token is not None else []
    return Reply(
        Done(message="Your password is set and every device was signed out; sign in with it."), headers=headers
    )


async def setup(ctx: Context, req: Request) -> Reply:
    b: SetupBody = req.body
    caller = _caller(req)
    signed = await _accounts(ctx).setup_admin(
        token=b.token,
        email=b.email,
        password=b.password,
        display_name=b.display_name,
        client_ip=caller.client_ip,
        user_agent=caller.user_agent,
    )
    await _end_previous(ctx, caller)
    return _sign_in_reply(ctx, signed)


async def whoami(ctx: Context, req: Request) -> Reply:
    caller = _caller(req)
    actor = caller.need_actor()
    user = await _accounts(ctx).me(actor) if actor.user_id is not None else None
    if caller.session is not None and caller.token is not None:
        current = caller.session.session.id
        return Reply(
            Whoami(
                user=user_out(user) if user is not None else None,
                session=session_out(caller.session.session, current),
                csrf_token=csrf_token(ctx.core.digester, caller.token),
                credential="session",
            )
        )
    return Reply(Whoami(user=user_out(user) if user else None, session=None, csrf_token=None, credential="manage_key"))


# -- OAuth ----------------------------------------------------------------------------


async def oauth_start(ctx: Context, req: Request) -> Reply:
    q: OAuthStartQuery = req.query
    provider = req.params["provider"]
    flow, cookie, ttl = ctx.oauth.new_state(_provider(ctx, provider), safe_next(q.next), None)
    try:
        url = await ctx.oauth.authorization_url(flow)
    except OAuthError as exc:
        raise _oauth_error(ctx, exc) from None
    return Reply(None, 302, [ctx.cookies.set_named(STATE_COOKIE, cookie, ttl)], redirect=url)


def _provider(ctx: Context, provider: str) -> Any:
    try:
        return ctx.oauth.config(provider).name
    except OAuthError as exc:
        raise _oauth_error(ctx, exc) from None


def _oauth_error(ctx: Context, exc: OAuthError) -> ApiError:
    return ApiError(exc.status, str(exc), field=None, headers=[ctx.cookies.clear_named(STATE_COOKIE)])


def _oauth_code(exc: OAuthError) -> str:
    if exc.reason == "provider":
        if exc.status == 404:
            return "not_configured"
        return "provider_unavailable" if exc.status >= 500 else "provider_error"
    return exc.reason


def _refused(provider: str, flow: Any, code: str, detail: str, clear_state: tuple[bytes, bytes]) -> Reply:
    """A refused callback, for the browser that followed it: back to the console's
    sign-in page (the account page when linking) with the error as a short code the
    page words. Never the code or state of the callback, nor the provider's text, in
    that URL; the details go to the log."""
    if code not in OAUTH_ERROR_CODES:
        code = "account_error"
    log.info("%s sign-in refused (%s): %s", provider[:20], code, detail)
    query = {"oauth_error": code}
    if provider in ("github", "google"):
        query["provider"] = provider
    if flow is not None and flow.link_user is not None:
        return Reply(None, 302, [clear_state], redirect=f"{ACCOUNT_PAGE}?{urlencode(query)}")
    if flow is not None and flow.next != "/":
        query["next"] = flow.next
    return Reply(None, 302, [clear_state], redirect=f"{SIGN_IN_PAGE}?{urlencode(query)}")


async def oauth_callback(ctx: Context, req: Request) -> Reply:
    from agentrouter.accounts.errors import AccountError, RegistrationClosed
    from agentrouter.accounts.service import SignedIn

    q: OAuthCallbackQuery = req.query
    caller = _caller(req)
    provider = req.params["provider"]
    clear_state = ctx.cookies.clear_named(STATE_COOKIE)
    flow = None
    try:
        ctx.oauth.config(provider)
        flow = ctx.oauth.read_state(provider, ctx.cookies.named(req.cookies, STATE_COOKIE), q.state)
        query = {k: v for k, v in (("code", q.code), ("state", q.state), ("error", q.error)) if v is not None}
        identity = await ctx.oauth.identity(flow, query)
    except OAuthError as exc:
        return _refused(provider, flow, _oauth_code(exc), str(exc), clear_state)
    accounts = _accounts(ctx)
    try:
        if flow.link_user is not None:
            if caller.actor is None or caller.session is None or caller.actor.user_id != flow.link_user:
                message = "the account that started linking is not signed in here any more"
                return _refused(provider, flow, "link_signed_out", message, clear_state)
            await accounts.link_identity(
                caller.actor, provider=identity.provider, subject=identity.subject, email=identity.email
            )
            return Reply(None, 302, [clear_state], redirect=flow.next)
        result = await accounts.sign_in_with_identity(
            provider=identity.provider,
            subject=identity.subject,
            email=identity.email,
            email_verified=identity.email_verified,
            display_name=identity.name,
            client_ip=caller.client_ip,
            user_agent=caller.user_agent,
        )
    except AccountError as exc:
        code = exc.code
        if isinstance(exc, RegistrationClosed) and not (identity.email and identity.email_verified):
            code = "unverified_email"
        return _refused(provider, flow, code, exc.message, clear_state)
    await _end_previous(ctx, caller)
    if isinstance(result, SignedIn):
        return Reply(None, 302, [clear_state, *_signed_in_headers(ctx, result)], redirect=flow.next)
    pending = ctx.cookies.set_named(
        TWO_FACTOR_COOKIE, result.pending_token, result.expires_at - ctx.now(), same_site="Strict"
    )
    page = f"{TWO_FACTOR_PAGE}?next={quote(flow.next, safe='/')}"
    return Reply(None, 302, [clear_state, pending], redirect=page)


# -- the caller's own account ---------------------------------------------------------


async def get_me(ctx: Context, req: Request) -> Reply:
    return Reply(user_out(await _accounts(ctx).me(_caller(req).need_user())))


async def update_me(ctx: Context, req: Request) -> Reply:
    b: MeUpdate = req.body
    actor = _caller(req).need_user()
    accounts = _accounts(ctx)
    if b.display_name is not msgspec.UNSET:
        return Reply(user_out(await accounts.set_display_name(actor, b.display_name)))
    return Reply(user_out(await accounts.me(actor)))


async def change_password(ctx: Context, req: Request) -> Reply:
    b: PasswordChange = req.body
    caller = _caller(req)
    ended = await _accounts(ctx).change_password(
        caller.need_user(),
        current=b.current_password,
        new=b.new_password,
        end_other_sessions=b.end_other_sessions,
        current_session=_current_session(caller),
    )
    return Reply(SessionEnded(ended=ended, current_ended=False))


async def list_sessions(ctx: Context, req: Request) -> Reply:
    caller = _caller(req)
    rows = await _accounts(ctx).list_sessions(caller.need_user())
    current = _current_session(caller)
    return Reply(SessionList(data=[session_out(s, current) for s in rows]))


async def end_session(ctx: Context, req: Request) -> Reply:
    caller = _caller(req)
    session_id = req.params["session_id"]
    await _accounts(ctx).end_session(caller.need_user(), session_id)
    current = session_id == _current_session(caller)
    headers = [ctx.cookies.clear_session()] if current else []
    return Reply(SessionEnded(ended=1, current_ended=current), headers=headers)


async def end_all_sessions(ctx: Context, req: Request) -> Reply:
    caller = _caller(req)
    ended = await _accounts(ctx).end_sessions(caller.need_user())
    current = caller.session is not None
    headers = [ctx.cookies.clear_session()] if current else []
    return Reply(SessionEnded(ended=ended, current_ended=current), headers=headers)


async def end_other_sessions(ctx: Context, req: Request) -> Reply:
    caller = _caller(req)
    ended = await _accounts(ctx).end_sessions(caller.need_user(), keep=_current_session(caller))
    return Reply(SessionEnded(ended=ended, current_ended=False))


async def list_identities(ctx: Context, req: Request) -> Reply:
    rows = await _accounts(ctx).list_identities(_caller(req).need_user())
    return Reply(IdentityList(data=[identity_out(i) for i in rows]))


async def link_identity(ctx: Context, req: Request) -> Reply:
    q: LinkQuery = req.query
    caller = _caller(req)
    actor = caller.need_user()
    caller.need_session("Linking a GitHub or Google account")
    provider = _provider(ctx, req.params["provider"])
    flow, cookie, ttl = ctx.oauth.new_state(provider, safe_next(q.next), actor.user_id)
    try:
        url = await ctx.oauth.authorization_url(flow)
    except OAuthError as exc:
        raise _oauth_error(ctx, exc) from None
    return Reply(AuthorizeUrl(authorize_url=url), headers=[ctx.cookies.set_named(STATE_COOKIE, cookie, ttl)])


async def unlink_identity(ctx: Context, req: Request) -> Reply:
    identity_id = req.params["identity_id"]
    provider, sep, subject = identity_id.partition(":")
    if not sep or provider not in ("github", "google") or not subject:
        raise ApiError(404, f"no identity with id {identity_id!r}")
    await _accounts(ctx).unlink_identity(_caller(req).need_user(), provider=provider, subject=subject)
    return Reply(Done(message=f"{identity_id} is no longer linked."))


async def totp_enroll(ctx: Context, req: Request) -> Reply:
    import segno

    enrollment = await _accounts(ctx).begin_totp(_caller(req).need_user())
    svg = segno.make(enrollment.uri, error="m").svg_inline(scale=4, title="Two-factor sign-in QR code")
    return Reply(TotpEnrollment(secret=enrollment.secret, otpauth_uri=enrollment.uri, qr_svg=svg))


async def totp_confirm(ctx: Context, req: Request) -> Reply:
    b: CodeBody = req.body
    codes = await _accounts(ctx).confirm_totp(_caller(req).need_user(), b.code)
    return Reply(RecoveryCodes(recovery_codes=codes))


async def totp_disable(ctx: Context, req: Request) -> Reply:
    b: CodeBody = req.body
    await _accounts(ctx).disable_totp(_caller(req).need_user(), code=b.code)
    return Reply(Done(message="Two-factor sign-in is off."))


async def totp_recovery_codes(ctx: Context, req: Request) -> Reply:
    b: CodeBody = req.body
    codes = await _accounts(ctx).renew_recovery_codes(_caller(req).need_user(), b.code)
    return Reply(RecoveryCodes(recovery_codes=codes))


# -- administration --------------------------------------------------------------------


async def list_users(ctx: Context, req: Request) -> Reply:
    q: UsersQuery = req.query
    rows = sorted(await _accounts(ctx).list_users(_caller(req).need_actor()), key=lambda u: (u.created_at, u.id))
    if q.cursor is not None:
        after = decode_cursor(q.cursor)
        rows = [u for u in rows if (u.created_at, u.id) > after]
    page = rows[: q.limit]
    has_more = len(rows) > q.limit
    return Reply(
        UserList(
            data=[user_out(u) for u in page],
            has_more=has_more,
            next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if has_more and page else None,
        )
    )


async def get_user(ctx: Context, req: Request) -> Reply:
    return Reply(user_out(await _accounts(ctx).get_user(_caller(req).need_actor(), req.params["user_id"])))


async def update_user(ctx: Context, req: Request) -> Reply:
    b: UserUpdate = req.body
    actor = _caller(req).need_actor()
    accounts = _accounts(ctx)
    user_id = req.params["user_id"]
    user = await accounts.get_user(actor, user_id)  # 404 for a member, before anything else
    if not actor.is_admin:
        from agentrouter.accounts.errors import PermissionDenied

        raise PermissionDenied("only an admin can do this")
    # Disabling first, so that its refusals (your own account, the last admin) come
    # before any change: a refused request changes nothing.
    if b.disabled is not msgspec.UNSET:
        user = await accounts.set_disabled(actor, user_id, b.disabled)
    if b.role is not msgspec.UNSET:
        user = await accounts.set_role(actor, user_id, b.role)
    return Reply(user_out(user))


async def delete_user(ctx: Context, req: Request) -> Reply:
    actor = _caller(req).need_actor()
    accounts = _accounts(ctx)
    user = await accounts.get_user(actor, req.params["user_id"])
    await accounts.delete_user(actor, user.id)
    return Reply(user_out(msgspec.structs.replace(user, disabled=True)))


async def create_invitation(ctx: Context, req: Request) -> Reply:
    b: InvitationCreate = req.body
    created = await _accounts(ctx).create_invitation(_caller(req).need_actor(), email=b.email, role=b.role)
    out = invitation_out(created.invitation)
    body = CreatedInvitation(**msgspec.structs.asdict(out), url=created.link, token=created.token)
    return Reply(body, 201, [(b"location", f"/api/v1/invitations/{out.id}".encode())])


async def list_invitations(ctx: Context, req: Request) -> Reply:
    rows = await _accounts(ctx).list_invitations(_caller(req).need_actor())
    return Reply(InvitationList(data=[invitation_out(i) for i in rows]))


async def revoke_invitation(ctx: Context, req: Request) -> Reply:
    invitation_id = req.params["invitation_id"]
    await _accounts(ctx).revoke_invitation(_caller(req).need_actor(), invitation_id)
    return Reply(Done(message=f"Invitation {invitation_id} is revoked."))


async def audit_events(ctx: Context, req: Request) -> Reply:
    q: AuditQuery = req.query
    now = ctx.now()
    since = None if q.since is None else parse_time(q.since, now=now, field="since")
    until = None if q.until is None else parse_time(q.until, now=now, field="until")
    before = None if q.cursor is None else int(q.cursor)
    rows = await _accounts(ctx).audit_events(
        _caller(req).need_actor(),
        user_id=q.user_id,
        event=q.event,
        before=before,
        since=since,
        until=until,
        limit=q.limit + 1,
    )
    page = rows[: q.limit]
    has_more = len(rows) > q.limit
    return Reply(
        AuditList(
            data=[audit_out(e) for e in page],
            has_more=has_more,
            next_cursor=str(page[-1].id) if has_more and page else None,
        )
    )


# -- the table -----------------------------------------------------------------------

_BODY = (400, 413, 415, 422)
_ANY = (401, 403, 429)
_ME = "/api/v1/me"

ACCOUNT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/v1/auth/providers",
        "getSignInMethods",
        "auth",
        "Sign-in methods",
        "What this server offers: password sign-in, the OAuth providers configured, and the registration mode.",
        providers,
        Providers,
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/register",
        "register",
        "auth",
        "Register",
        "Create an account with email and password (and an invitation's token in `invite` mode). The same 202 "
        "answer whether or not the address has an account; a verification link is mailed. Until verified, the "
        "account can sign in but not create keys.",
        register,
        Accepted,
        status=202,
        body=RegisterBody,
        errors=(*_BODY, 403, 429),
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/invitation",
        "checkInvitation",
        "auth",
        "Check an invitation",
        "The invitation behind a link's token (its address and role), for the registration page.",
        check_invitation,
        Invitation,
        body=TokenBody,
        errors=_BODY,
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/verify",
        "verifyEmail",
        "auth",
        "Verify an email address",
        "With the token of the mailed link (single use, expiring).",
        verify_email,
        Done,
        body=TokenBody,
        errors=_BODY,
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/verify/resend",
        "resendVerification",
        "auth",
        "Mail a new verification link",
        "To `email` (the same 202 answer whether or not it has an unverified account), or, signed in and "
        "without `email`, to your own address (409 when it is verified already).",
        resend_verification,
        Accepted,
        status=202,
        body=ResendBody,
        errors=(*_BODY, 403, 409, 429),
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/signin",
        "signIn",
        "auth",
        "Sign in with email and password",
        "Sets the session cookie (HttpOnly, SameSite=Lax, 30 days) and returns the CSRF token to send as "
        "`X-CSRF-Token` with every request that changes something. With two-factor sign-in on, the answer is "
        "`two_factor_required` with a `two_factor_token` for `/api/v1/auth/signin/two-factor` instead. Wrong "
        "email or password: 401 (the same for an unknown address); too many attempts: 429 with Retry-After.",
        sign_in,
        SignInResult,
        body=SignInBody,
        errors=(*_BODY, 401, 403, 429, 503),
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/signin/two-factor",
        "signInTwoFactor",
        "auth",
        "Finish a sign-in with a code",
        "The authenticator's 6-digit code or a recovery code (used up), with the `two_factor_token` of the "
        "sign-in's answer (or the pending sign-in's cookie after an OAuth sign-in).",
        two_factor,
        SignInResult,
        body=TwoFactorBody,
        errors=(*_BODY, 401, 429),
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/signout",
        "signOut",
        "auth",
        "Sign out",
        "Ends this session (refused from its next request on, on every worker) and clears the cookie.",
        sign_out,
        Done,
        errors=(403,),
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/password/reset",
        "requestPasswordReset",
        "auth",
        "Ask for a password reset link",
        "Mails a short-lived, single-use link to the account with this address; the same 202 answer either way.",
        request_reset,
        Accepted,
        status=202,
        body=EmailBody,
        errors=(*_BODY, 429),
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/password/reset/confirm",
        "resetPassword",
        "auth",
        "Set a new password with a reset link",
        "Sets the password and ends every session of the account.",
        confirm_reset,
        Done,
        body=ResetConfirmBody,
        errors=_BODY,
        auth="public",
    ),
    Operation(
        "POST",
        "/api/v1/auth/setup",
        "setupFirstAdmin",
        "auth",
        "Create the first admin",
        "With the one-time setup token the server printed at start (valid until used or restarted), while "
        "there is no user. Signs the new admin in.",
        setup,
        SignInResult,
        body=SetupBody,
        errors=_BODY,
        auth="public",
    ),
    Operation(
        "GET",
        "/api/v1/auth/session",
        "getSession",
        "auth",
        "The caller",
        "The signed-in user and, with a session cookie, the session and its CSRF token (the console reads it "
        "on load). With a manage key: its owner (null for an instance key).",
        whoami,
        Whoami,
        errors=_ANY,
    ),
    Operation(
        "GET",
        "/api/v1/auth/oauth/{provider}/start",
        "startOAuth",
        "auth",
        "Sign in with GitHub or Google",
        "For a browser: redirects (302) to the provider, with `state` bound to this browser by a short-lived "
        "signed cookie, PKCE (S256) and, for Google, a nonce. `next`: a path on this site to return to.",
        oauth_start,
        None,
        status=302,
        query=OAuthStartQuery,
        errors=(404, 422, 502),
        auth="public",
        redirect=True,
    ),
    Operation(
        "GET",
        "/api/v1/auth/oauth/{provider}/callback",
        "finishOAuth",
        "auth",
        "The provider's callback",
        "Register this URL at the provider. Checks the state against this browser's cookie, exchanges the code "
        "(with the PKCE verifier), validates Google's ID token, then signs in (or links, when started from "
        "`/api/v1/me/identities/{provider}/link`), sets the session cookie and redirects to `next`. With two-factor "
        f"sign-in on it redirects to `{TWO_FACTOR_PAGE}`. A refused callback (wrong state, cancelled or refused "
        f"at the provider, the provider unreachable) redirects too, to `{SIGN_IN_PAGE}` (`{ACCOUNT_PAGE}` when "
        "linking) with `oauth_error` set to a short code that page words.",
        oauth_callback,
        None,
        status=302,
        query=OAuthCallbackQuery,
        errors=(422,),
        auth="public",
        redirect=True,
    ),
    Operation(
        "GET",
        _ME,
        "getMe",
        "account",
        "Your account",
        "The signed-in user (or the owner of the manage key).",
        get_me,
        User,
        errors=(*_ANY, 404),
        auth="user",
    ),
    Operation(
        "PATCH",
        _ME,
        "updateMe",
        "account",
        "Update your account",
        "Change the display name.",
        update_me,
        User,
        body=MeUpdate,
        errors=(*_ANY, *_BODY, 404),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/password",
        "changePassword",
        "account",
        "Change your password",
        "With the current password (not needed by an account that has none yet); `end_other_sessions` also "
        "signs out every other device.",
        change_password,
        SessionEnded,
        body=PasswordChange,
        errors=(*_ANY, *_BODY, 404),
        auth="user",
    ),
    Operation(
        "GET",
        _ME + "/sessions",
        "listSessions",
        "account",
        "Your devices",
        "Every live session with its device, IP, sign-in method and times; this request's is `current`.",
        list_sessions,
        SessionList,
        errors=(*_ANY, 404),
        auth="user",
    ),
    Operation(
        "DELETE",
        _ME + "/sessions/{session_id}",
        "endSession",
        "account",
        "End one session",
        "Refused from its next request on, on every worker. Someone else's session is 404.",
        end_session,
        SessionEnded,
        errors=(*_ANY, 404),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/sessions/end-all",
        "endAllSessions",
        "account",
        "Log out all devices",
        "Ends every session of yours, this one included.",
        end_all_sessions,
        SessionEnded,
        errors=(*_ANY, 404),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/sessions/end-others",
        "endOtherSessions",
        "account",
        "Log out all other devices",
        "Ends every session of yours but this one.",
        end_other_sessions,
        SessionEnded,
        errors=(*_ANY, 404),
        auth="user",
    ),
    Operation(
        "GET",
        _ME + "/identities",
        "listIdentities",
        "account",
        "Your linked GitHub and Google accounts",
        "Linked by the provider's stable id.",
        list_identities,
        IdentityList,
        errors=(*_ANY, 404),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/identities/{provider}/link",
        "linkIdentity",
        "account",
        "Link GitHub or Google",
        "From a signed-in browser: returns the provider's URL (and sets the state cookie); after the provider "
        "the callback links the account to you and redirects to `next`.",
        link_identity,
        AuthorizeUrl,
        query=LinkQuery,
        errors=(*_ANY, 404, 422, 502),
        auth="user",
    ),
    Operation(
        "DELETE",
        _ME + "/identities/{identity_id}",
        "unlinkIdentity",
        "account",
        "Unlink GitHub or Google",
        "`identity_id` is `provider:subject`. Refused (409) when it is your only way to sign in.",
        unlink_identity,
        Done,
        errors=(*_ANY, 404, 409),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/totp",
        "enrollTotp",
        "account",
        "Start two-factor enrolment",
        "A new TOTP secret with its otpauth:// URI and an SVG QR code; confirm with a code to turn it on.",
        totp_enroll,
        TotpEnrollment,
        errors=(*_ANY, 404, 409),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/totp/confirm",
        "confirmTotp",
        "account",
        "Turn two-factor sign-in on",
        "With a code from the authenticator; returns the recovery codes, shown this once.",
        totp_confirm,
        RecoveryCodes,
        body=CodeBody,
        errors=(*_ANY, *_BODY, 404, 409),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/totp/disable",
        "disableTotp",
        "account",
        "Turn two-factor sign-in off",
        "With a current code or a recovery code.",
        totp_disable,
        Done,
        body=CodeBody,
        errors=(*_ANY, *_BODY, 404, 409),
        auth="user",
    ),
    Operation(
        "POST",
        _ME + "/totp/recovery-codes",
        "renewRecoveryCodes",
        "account",
        "New recovery codes",
        "With a current code; the old recovery codes stop working.",
        totp_recovery_codes,
        RecoveryCodes,
        body=CodeBody,
        errors=(*_ANY, *_BODY, 404, 409),
        auth="user",
    ),
    Operation(
        "GET",
        "/api/v1/users",
        "listUsers",
        "users",
        "List users",
        "Admins only; oldest first, paginated like the keys.",
        list_users,
        UserList,
        query=UsersQuery,
        errors=(*_ANY, 422),
    ),
    Operation(
        "GET",
        "/api/v1/users/{user_id}",
        "getUser",
        "users",
        "Get a user",
        "Admins: anyone; a member: only themselves (anyone else is 404).",
        get_user,
        User,
        errors=(*_ANY, 404),
    ),
    Operation(
        "PATCH",
        "/api/v1/users/{user_id}",
        "updateUser",
        "users",
        "Change a user's role or disable them",
        "Admins only. Disabling ends every session at once and deletes the user's keys (refused on their next "
        "request); the last admin cannot be demoted or disabled (409).",
        update_user,
        User,
        body=UserUpdate,
        errors=(*_ANY, *_BODY, 404, 409),
    ),
    Operation(
        "DELETE",
        "/api/v1/users/{user_id}",
        "deleteUser",
        "users",
        "Delete a user",
        "Admins only. Their keys are deleted first, then the user with their sessions and identities; the "
        "audit events stay.",
        delete_user,
        User,
        errors=(*_ANY, 404, 409),
    ),
    Operation(
        "POST",
        "/api/v1/invitations",
        "createInvitation",
        "users",
        "Invite someone",
        "Admins only. Returns the registration link (shown once; mailed when bound to an address).",
        create_invitation,
        CreatedInvitation,
        status=201,
        body=InvitationCreate,
        errors=(*_ANY, *_BODY),
    ),
    Operation(
        "GET",
        "/api/v1/invitations",
        "listInvitations",
        "users",
        "List invitations",
        "Admins only.",
        list_invitations,
        InvitationList,
        errors=_ANY,
    ),
    Operation(
        "DELETE",
        "/api/v1/invitations/{invitation_id}",
        "revokeInvitation",
        "users",
        "Revoke an invitation",
        "Admins only; an open invitation stops working.",
        revoke_invitation,
        Done,
        errors=(*_ANY, 404),
    ),
    Operation(
        "GET",
        "/api/v1/audit",
        "listAuditEvents",
        "audit",
        "Security events",
        "Newest first: sign-ins (success and failure, with method), sign-outs, sessions ended, password and "
        "two-factor changes, identities linked, key changes — with time, actor, subject and IP, never a key, "
        "token or password. Yours; admins see everyone's (`user_id` to choose one).",
        audit_events,
        AuditList,
        query=AuditQuery,
        errors=(*_ANY, 404, 422),
    ),
)
