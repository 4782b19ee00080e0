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
