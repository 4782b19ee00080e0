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
