"""Records the store reads and writes (msgspec structs: typed, fast to encode)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Scope = Literal["inference", "manage"]
State = Literal["active", "deleted"]
SCOPES: tuple[str, ...] = ("inference", "manage")


class UsageTotals(msgspec.Struct, kw_only=True):
    requests: int = 0
    successes: int = 0
    failures_4xx: int = 0
    failures_5xx: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_total: float = 0.0
    last_used_at: float | None = None
    last_client_ip: str | None = None

    @property
    def failures(self) -> int:
        return self.failures_4xx + self.failures_5xx


class KeyRow(msgspec.Struct, kw_only=True):
    """One API key as stored: never the key itself, only its digest."""

    id: str
    name: str | None
    prefix: str
    created_at: float
    requests: int | None
    interval: float | None
    metadata: dict[str, Any]
    expires_at: float | None
    state: State
    scope: Scope
    owner: str | None
    slot: int | None
    tag: int
    rotated_to: str | None = None
    deleted_at: float | None = None
    usage: UsageTotals = msgspec.field(default_factory=UsageTotals)

    @property
    def last_used_at(self) -> float | None:
        return self.usage.last_used_at


class UsageDelta(msgspec.Struct, kw_only=True):
    """Usage one gateway process gathered for one key since its last flush."""

    key_id: str
    requests: int = 0
    successes: int = 0
    failures_4xx: int = 0
    failures_5xx: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_total: float = 0.0
    last_used_at: float = 0.0
    last_client_ip: str | None = None


# -- request log, usage statistics and alerts (management API, monitoring) --------

AlertKind = Literal["volume_spike", "unusual_hour", "failure_rate", "new_ip"]
ALERT_KINDS: tuple[str, ...] = ("volume_spike", "unusual_hour", "failure_rate", "new_ip")


class RequestRecord(msgspec.Struct, kw_only=True, frozen=True, gc=False, array_like=True):
    """One proxied request, as the request log keeps it. Never the key itself.

    ``status`` classes: below 400 a success, 400–499 a 4xx failure, anything else
    (5xx, or 0 for a request that ended without a status) a 5xx failure.
    Encoded as an array: compact on the pipe to the usage writer (``store.writer``).
    """

    key_id: str
    time: float
    """Unix seconds when the request arrived."""
    model: str | None
    status: int
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    client_ip: str | None = None
    user_agent: str | None = None
    caller_request_id: str | None = None
    """The ``x-request-id`` the caller sent (at most ``MAX_CALLER_REQUEST_ID`` bytes; a
    longer one is not kept), never forwarded: the gateway's own id goes upstream."""


MAX_CALLER_REQUEST_ID = 1024
"""Bytes of a caller's ``x-request-id`` kept in the request log (a longer one: none)."""


class AlertRow(msgspec.Struct, kw_only=True):
    """One finding of the unusual-usage monitor."""

    id: str
    key_id: str
    kind: AlertKind
    subject: str
    """What the condition is about (an IP network for ``new_ip``, an hour start
    otherwise); with ``key_id`` and ``kind`` it identifies the condition."""
    evidence: dict[str, Any]
    created_at: float
    acknowledged_at: float | None = None
    notified_at: float | None = None
    notify_attempts: int = 0


# -- accounts (agentrouter.accounts) ---------------------------------------------

Role = Literal["admin", "member"]
ROLES: tuple[str, ...] = ("admin", "member")
TokenKind = Literal["verify", "reset", "setup", "second_factor"]
Provider = Literal["github", "google"]
PROVIDERS: tuple[str, ...] = ("github", "google")


class UserRow(msgspec.Struct, kw_only=True):
    """A person. ``email`` is stored as given; ``email_key`` (its case-folded form) is
    unique, so addresses compare case-insensitively. Never the password (only its
    Argon2id hash), never the TOTP secret in the clear (sealed)."""

    id: str
    email: str
    email_key: str
    display_name: str | None
    password_hash: str | None
    email_verified_at: float | None
    role: Role
    disabled: bool
    created_at: float
    last_login_at: float | None = None
    password_changed_at: float | None = None
    totp_secret: bytes | None = None
    """Sealed (AES-GCM under a key derived from the server secret); set from enrolment on."""
    totp_enabled_at: float | None = None
    """Set once the enrolment was confirmed with a code: sign-in then asks for one."""
    totp_last_step: int | None = None
    """The TOTP time step last accepted: a code is never accepted twice."""

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None

    @property
    def totp_enabled(self) -> bool:
        return self.totp_enabled_at is not None


class SessionRow(msgspec.Struct, kw_only=True):
    """A signed-in browser. Only the token's digest is stored (not in this record)."""

    id: str
    user_id: str
    method: str
    """How the session was signed in: password, github, google, setup, reset."""
    created_at: float
    last_seen_at: float
    expires_at: float
    client_ip: str | None
    user_agent: str | None
    device: str | None
    """A label such as "Firefox on Linux" (ua-parser)."""


class TokenRow(msgspec.Struct, kw_only=True):
    """A one-time token (verification, reset, setup, pending second factor)."""

    kind: TokenKind
    user_id: str | None
    email: str | None
    created_at: float
    expires_at: float | None
    detail: dict[str, Any]


class IdentityRow(msgspec.Struct, kw_only=True):
    """An OAuth identity: the provider's stable id (``subject``) linked to a user."""

    provider: Provider
    subject: str
    user_id: str
    email: str | None
    created_at: float
    last_used_at: float | None = None


class InvitationRow(msgspec.Struct, kw_only=True):
    """An admin's invitation to register (single use, expiring, optionally bound to
    one address)."""

    id: str
    email: str | None
    role: Role
    created_by: str | None
    created_at: float
    expires_at: float
    used_at: float | None = None
    used_by: str | None = None


class AuditEvent(msgspec.Struct, kw_only=True):
    """One security event. Never a key, token, code or password."""

    id: int
    time: float
    event: str
    actor: str | None
    """Who did it: a user id, ``key:<id>`` (a manage key), ``cli``, or None (an
    unauthenticated caller, e.g. a failed sign-in)."""
    user_id: str | None
    """The account the event is about (its owner sees it)."""
    target: str | None
    """What it acted on: a session id, key id, identity (``github:123``), invitation id."""
    method: str | None
    """How: password, github, google, totp, recovery_code, …"""
    client_ip: str | None
    detail: dict[str, Any]
