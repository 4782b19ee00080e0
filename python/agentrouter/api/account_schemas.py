"""Request and response bodies of the account routes (sign-in, sessions, identities,
two-factor, users, invitations, audit), as msgspec structs; the OpenAPI document is
generated from them like the key routes' (``schemas.py``).

Request bodies forbid unknown fields. Secrets travel one way only: a password, a
link's token or a code goes in; a session token comes back only in the
``Set-Cookie`` header, never in a body; a TOTP secret and recovery codes are shown
once, at enrolment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from agentrouter.api.schemas import Cursor, Limit, TimeParam

Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[^\s@]+@[^\s@]+\.[^\s@.]+$",
        description="An email address (compared case-insensitively).",
    ),
]
Password = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=1024,
        description=(
            "At least 8 characters with an uppercase letter, a lowercase letter and a digit, and not easily "
            "guessed (common passwords, keyboard walks and your own name are refused); never truncated."
        ),
    ),
]
Token = Annotated[str, Meta(min_length=1, max_length=256, description="The token from the link.")]
DisplayName = Annotated[str, Meta(max_length=200, description="How you are shown; blank clears it.")]
Code = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        description="The 6-digit code of the authenticator app, or one of the recovery codes.",
    ),
]
Role = Literal["admin", "member"]
ProviderName = Literal["github", "google"]

# -- people ---------------------------------------------------------------------


class Identity(msgspec.Struct, kw_only=True):
    """A GitHub or Google account linked to a user, by the provider's stable id."""

    id: Annotated[str, Meta(description="provider:subject, e.g. github:583231.")]
    provider: ProviderName
    subject: Annotated[str, Meta(description="The provider's id of the account (GitHub id, Google sub).")]
    email: Annotated[str | None, Meta(description="The email the provider gave at the last sign-in.")]
    created_at: float
    last_used_at: float | None


class IdentityList(msgspec.Struct, kw_only=True):
    data: list[Identity]


class User(msgspec.Struct, kw_only=True):
    """A person. Never their password, its hash or their TOTP secret."""

    id: str
    email: str
    display_name: str | None
    role: Role
    email_verified: bool
    email_verified_at: float | None
    disabled: bool
    has_password: Annotated[bool, Meta(description="false: signs in with GitHub or Google only.")]
    two_factor_enabled: bool
    created_at: float
    last_login_at: float | None


class UserList(msgspec.Struct, kw_only=True):
    data: list[User]
    has_more: bool
    next_cursor: str | None


class Session(msgspec.Struct, kw_only=True):
    """A signed-in browser (device). Never its token."""

    id: str
    method: Annotated[str, Meta(description="How it was signed in: password, github, google, setup, reset.")]
    created_at: float
    last_seen_at: float
    expires_at: Annotated[float, Meta(description="30 days after the sign-in (accounts.session_days).")]
    client_ip: str | None
    user_agent: str | None
    device: Annotated[str | None, Meta(description='A label such as "Firefox on Linux".')]
    current: Annotated[bool, Meta(description="true: the session of this very request.")]


class SessionList(msgspec.Struct, kw_only=True):
    data: list[Session]


class SessionEnded(msgspec.Struct, kw_only=True):
    ended: Annotated[int, Meta(description="How many sessions were ended.")]
    current_ended: Annotated[bool, Meta(description="true: this request's session was one of them (cookie cleared).")]


class Whoami(msgspec.Struct, kw_only=True):
    """The caller: the signed-in user and, with a session cookie, the session and
    its CSRF token (send it as ``X-CSRF-Token`` on every request that changes
    something)."""

    user: User | None
    session: Session | None
    csrf_token: Annotated[str | None, Meta(description="For the X-CSRF-Token header (session cookie only).")]
    credential: Annotated[Literal["session", "manage_key"], Meta(description="What authenticated this request.")]


class SignInResult(msgspec.Struct, kw_only=True):
    """``signed_in``: the session cookie was set and ``csrf_token`` goes with it.
    ``two_factor_required``: send the code with ``two_factor_token`` to
    ``/api/v1/auth/signin/two-factor`` before ``expires_at``."""

    status: Literal["signed_in", "two_factor_required"]
    user: User | None = None
    session: Session | None = None
    csrf_token: str | None = None
    two_factor_token: str | None = None
    expires_at: float | None = None


class Accepted(msgspec.Struct, kw_only=True):
    """The same answer whether or not the address has an account (no enumeration)."""

    status: Literal["accepted"] = "accepted"
    message: str


class Done(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    message: str


class Providers(msgspec.Struct, kw_only=True):
    """The sign-in methods this server offers."""

    password: bool
    providers: Annotated[list[ProviderName], Meta(description="OAuth providers configured (client id set).")]
    registration: Annotated[Literal["open", "domains", "invite"], Meta(description="Who may register.")]


class AuthorizeUrl(msgspec.Struct, kw_only=True):
    """Send the browser here to link the provider; it returns to the callback."""

    authorize_url: str


class TotpEnrollment(msgspec.Struct, kw_only=True):
    """Add this to an authenticator app, then confirm with a code from it."""

    secret: Annotated[str, Meta(description="Base32, for typing in by hand.")]
    otpauth_uri: Annotated[str, Meta(description="otpauth://totp/… (what the QR code holds).")]
    qr_svg: Annotated[str, Meta(description="The QR code of otpauth_uri as an SVG document.")]


class RecoveryCodes(msgspec.Struct, kw_only=True):
    """One-time codes for when the authenticator is lost: shown this once."""

    recovery_codes: list[str]


class Invitation(msgspec.Struct, kw_only=True):
    id: str
    email: Annotated[str | None, Meta(description="Only this address may use it; null: anyone with the link.")]
    role: Role
    created_by: str | None
    created_at: float
    expires_at: float
    used_at: float | None
    used_by: str | None


class CreatedInvitation(Invitation, kw_only=True):
    url: Annotated[str, Meta(description="The registration link with the token: shown this once.")]
    token: str


class InvitationList(msgspec.Struct, kw_only=True):
    data: list[Invitation]


class AuditEntry(msgspec.Struct, kw_only=True):
    """A security event. Never a key, token, code or password."""

    id: int
    time: float
    event: str
    actor: Annotated[str | None, Meta(description="A user id, key:<id> (a manage key), cli, or null.")]
    user_id: Annotated[str | None, Meta(description="The account the event is about.")]
    target: str | None
    method: str | None
    client_ip: str | None
    detail: dict[str, Any]


class AuditList(msgspec.Struct, kw_only=True):
    data: list[AuditEntry]
    has_more: bool
    next_cursor: str | None


# -- request bodies ----------------------------------------------------------------


class RegisterBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: DisplayName | None = None
    invitation: Annotated[Token | None, Meta(description="The invitation link's token (invite mode).")] = None


class EmailBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email


class ResendBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[Email | None, Meta(description="Absent when signed in: your own address.")] = None


class TokenBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token


class SignInBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    password: Password


class TwoFactorBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code
    two_factor_token: Annotated[
        Token | None, Meta(description="From the sign-in's answer; absent: the pending sign-in's cookie.")
    ] = None


class ResetConfirmBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token
    password: Password


class SetupBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Annotated[Token, Meta(description="The setup token the server printed at start.")]
    email: Email
    password: Password
    display_name: DisplayName | None = None


class MeUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    display_name: DisplayName | UnsetType | None = UNSET


class PasswordChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    current_password: (
        Annotated[str, Meta(max_length=1024, description="Required when the account has a password.")] | None
    ) = None
    new_password: Password
    end_other_sessions: Annotated[bool, Meta(description="Also sign out every other device.")] = False


class CodeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code


class TotpDisable(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Annotated[Code | None, Meta(description="A current code or a recovery code.")] = None
    password: Annotated[str, Meta(max_length=1024, description="Or the account's password.")] | None = None


class LinkQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    next: Annotated[str, Meta(max_length=2000, description="A path on this site to return to.")] | None = None


class UserUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: Role | UnsetType = UNSET
    disabled: Annotated[bool, Meta(description="true ends every session and stops the user's keys.")] | UnsetType = (
        UNSET
    )


class InvitationCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[Email | None, Meta(description="Bind the invitation to this address.")] = None
    role: Role = "member"


class UsersQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    limit: Limit = 50
    cursor: Cursor | None = None


class AuditQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    user_id: Annotated[str, Meta(min_length=1, max_length=64, description="Admins: events of this user.")] | None = None
    event: Annotated[str, Meta(min_length=1, max_length=64, description="Only this event, e.g. sign_in.")] | None = None
    since: TimeParam | None = None
    until: TimeParam | None = None
    limit: Limit = 50
    cursor: (
        Annotated[str, Meta(pattern=r"^[0-9]{1,18}$", description="The next_cursor of the previous page.")] | None
    ) = None


class OAuthStartQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    next: Annotated[str, Meta(max_length=2000, description="A path on this site to return to.")] | None = None


class OAuthCallbackQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    code: Annotated[str, Meta(max_length=2000)] | None = None
    state: Annotated[str, Meta(max_length=2000)] | None = None
    error: Annotated[str, Meta(max_length=2000)] | None = None
