"""The records of the request log, usage statistics, known client IPs, alerts and
leases (the queries are ``store.sql``'s, the same for every backend). Four kinds of rows:

* ``request_log``: one row per proxied request (time, key id, model, status,
  latency, tokens, client IP, user agent, the caller's own x-request-id; never the
  key), written in batches off the hot path by the gateway's usage recorder —
  ``Store.add_usage`` writes them in the transaction that adds the key totals, so
  the two never disagree — and pruned after the retention period. A request
  refused before its key was known (401: no key, a malformed one, an unknown one)
  has no key and no row. Usage time series with latency percentiles, distinct IPs
  and the per-model breakdown are computed from it.
* ``usage_hourly`` and ``key_ips``: rollups kept in the same transaction as the log
  rows, so the monitor's baselines (days and weeks of a key's history) and a key's
  known IP set cost a few index reads and outlive the log's retention.
* ``alerts``: the monitor's findings, deduplicated per condition.
* ``leases``: a named lease with an expiry, so one process of a multi-worker server
  (or of several hosts on one PostgreSQL) runs the monitor.

Status classes, the same as the usage recorder's: below 400 a success, 400–499 a
4xx failure, everything else a 5xx failure.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from agentrouter.errors import AgentRouterError
from agentrouter.store.models import RequestRecord

Bucket = Literal["minute", "hour", "day"]
BUCKET_SECONDS: Final[dict[str, int]] = {"minute": 60, "hour": 3600, "day": 86400}
MAX_BUCKETS: Final = 10_080
"""The longest series one query returns: a week of minutes, 420 days of hours."""
MAX_USER_AGENT: Final = 512
MAX_MODEL: Final = 256
WRITE_CHUNK: Final = 64
"""Request-log rows per insert call (about 250 µs of SQLite's CPU)."""
PRUNE_BATCH: Final = 5000


class UsageStats(msgspec.Struct, kw_only=True):
    """Counts over a range of time. Latencies are nearest-rank percentiles in
    milliseconds (None when there were no requests)."""

    requests: int = 0
    successes: int = 0
    failures_4xx: int = 0
    failures_5xx: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    distinct_client_ips: int = 0


class UsageBucket(UsageStats, kw_only=True):
    """One bucket of a series."""

    start: Annotated[float, msgspec.Meta(description="The bucket's first second (Unix time, UTC-aligned).")]


class ModelUsage(UsageStats, kw_only=True):
    """One model's share of a range."""

    model: Annotated[str | None, msgspec.Meta(description="The model asked for; null when the request named none.")]


class UsageReport(msgspec.Struct, kw_only=True):
    """Usage over a range: totals, a dense series of buckets and the per-model breakdown."""

    key_id: Annotated[str | None, msgspec.Meta(description="The key the figures are for; null: every key.")]
    since: Annotated[float, msgspec.Meta(description="Start (Unix seconds), aligned down to the bucket size.")]
    until: Annotated[float, msgspec.Meta(description="End (Unix seconds), exclusive.")]
    bucket: Bucket
    bucket_seconds: int
    totals: UsageStats
    series: Annotated[
        list[UsageBucket], msgspec.Meta(description="Every bucket of the range, oldest first, empty ones included.")
    ]
    models: Annotated[
        list[ModelUsage], msgspec.Meta(description="The range's figures per requested model, most requests first.")
    ]


class HourlyUsage(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One clock hour of one key's use (a row of ``usage_hourly``)."""

    start: int
    """Unix seconds, a multiple of 3600."""
    requests: int
    failures_4xx: int = 0
    failures_5xx: int = 0

    @property
    def failures(self) -> int:
        return self.failures_4xx + self.failures_5xx


class ClientIp(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A client IP address a key was used from."""

    ip: str
    first_seen: float
    last_seen: float
    requests: int = 0


class UsageQueryError(AgentRouterError, ValueError):
    """A usage range the store will not compute; ``field`` names the bad parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def new_alert_id() -> str:
    return "alr_" + secrets.token_hex(8)


def cut(text: str | None, limit: int) -> str | None:
    """``text`` at most ``limit`` characters long, a NUL (which a caller can send in a
    JSON string, and PostgreSQL's text cannot hold) as U+FFFD, on every backend alike."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if len(text) <= limit else text[:limit]


def rollups(
    records: Sequence[RequestRecord],
) -> tuple[list[tuple[str, int, int, int, int, int, int, int, float]], list[tuple[str, str, float, float, int]]]:
    """The ``usage_hourly`` and ``key_ips`` increments of a batch of log rows:
    (key, hour, requests, successes, 4xx, 5xx, input tokens, output tokens, latency)
    and (key, ip, first seen, last seen, requests)."""
    hours: dict[tuple[str, int], list[Any]] = {}
    ips: dict[tuple[str, str], list[Any]] = {}
    for r in records:
        h = hours.setdefault((r.key_id, int(r.time // 3600) * 3600), [0, 0, 0, 0, 0, 0, 0.0])
        h[0] += 1
        if r.status < 400:
            h[1] += 1
        elif r.status < 500:
            h[2] += 1
        else:
            h[3] += 1
        h[4] += r.input_tokens
        h[5] += r.output_tokens
        h[6] += r.latency_ms
        if r.client_ip:
            seen = ips.get((r.key_id, r.client_ip))
            if seen is None:
                ips[(r.key_id, r.client_ip)] = [r.time, r.time, 1]
            else:
                seen[0] = min(seen[0], r.time)
                seen[1] = max(seen[1], r.time)
                seen[2] += 1
    return (
        [(k, hour, v[0], v[1], v[2], v[3], v[4], v[5], float(v[6])) for (k, hour), v in hours.items()],
        [(k, ip, float(v[0]), float(v[1]), v[2]) for (k, ip), v in ips.items()],
    )
