"""The request log, usage statistics, known client IPs, alerts and leases.

Works on the store's own connection (one SQLite file, WAL), beside the key tables
of ``store/sqlite.py``. Four kinds of rows:

* ``request_log``: one row per proxied request (time, key id, model, status,
  latency, tokens, client IP, user agent, the caller's own x-request-id; never the
  key), written in batches off the hot path by the gateway's usage recorder —
  ``Store.add_usage`` calls ``write_requests`` in the transaction that adds the key
  totals, so the two never disagree — and pruned after the retention period. A
  request refused before its key was known (401: no key, a malformed one, an
  unknown one) has no key and no row. Usage time series with
  latency percentiles, distinct IPs and the per-model breakdown are computed from it.
* ``usage_hourly`` and ``key_ips``: rollups kept in the same transaction as the log
  rows, so the monitor's baselines (days and weeks of a key's history) and a key's
  known IP set cost a few index reads and outlive the log's retention.
* ``alerts``: the monitor's findings, deduplicated per condition.
* ``leases``: a named lease with an expiry, so one process of a multi-worker server
  runs the monitor.

Status classes, the same as the usage recorder's: below 400 a success, 400–499 a
4xx failure, everything else a 5xx failure.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import aiosqlite
import msgspec

from agentrouter.errors import AgentRouterError
from agentrouter.store.models import ALERT_KINDS, AlertRow, RequestRecord

if TYPE_CHECKING:  # sqlite.py imports write_requests from here
    from agentrouter.store.sqlite import Store

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


class Analytics:
    """Request log, statistics, alerts and leases on an open ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # Reads share the store's connection (and its thread); writes go through
        # ``store.transaction()`` so they take the write lock up front.
        self._db: aiosqlite.Connection = store._db

    # -- request log ---------------------------------------------------------

    async def add_requests(self, records: Sequence[RequestRecord]) -> None:
        """Append a batch of request-log rows and update the rollups, in one transaction.

        Called by the usage recorder at each flush (about once a second), never on
        the hot path. Long user agents and model names are cut, never refused.
        """
        if not records:
            return
        async with self._store.transaction() as db:
            await write_requests(db, records)

    async def prune(self, *, log_before: float, rollups_before: float | None = None) -> int:
        """Delete request-log rows older than ``log_before`` (and rollups older than
        ``rollups_before``) in short transactions, so writers never wait long.
        Returns the number of log rows deleted."""
        deleted = 0
        while True:
            async with self._store.transaction() as db:
                cur = await db.execute(
                    "DELETE FROM request_log WHERE id IN"
                    " (SELECT id FROM request_log WHERE time < ? ORDER BY time LIMIT ?)",
                    (log_before, PRUNE_BATCH),
                )
                n = cur.rowcount
            deleted += n
            if n < PRUNE_BATCH:
                break
        if rollups_before is not None:
            async with self._store.transaction() as db:
                await db.execute("DELETE FROM usage_hourly WHERE hour < ?", (rollups_before,))
                await db.execute("DELETE FROM key_ips WHERE last_seen < ?", (rollups_before,))
        return deleted

    async def oldest_request(self) -> float | None:
        row = _first(await self._db.execute_fetchall("SELECT MIN(time) FROM request_log"))
        return None if row is None or row[0] is None else float(row[0])

    async def count_requests(self, key_id: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM request_log", []
        if key_id is not None:
            sql, args = sql + " WHERE key_id = ?", [key_id]
        row = _first(await self._db.execute_fetchall(sql, args))
        return int(row[0]) if row else 0

    # -- usage statistics ------------------------------------------------------

    async def usage(
        self,
        *,
        since: float,
        until: float,
        bucket: Bucket = "hour",
        key_id: str | None = None,
        owner: str | None = None,
    ) -> UsageReport:
        """Totals, a dense time series and the per-model breakdown over [since, until),
        of one key, of the keys of one ``owner`` (a user id), or of every key.

        ``since`` is aligned down to a bucket boundary (UTC), so the series' buckets
        are whole and the totals equal the sum of the series.
        """
        if bucket not in BUCKET_SECONDS:
            raise UsageQueryError(f"bucket must be one of: {', '.join(BUCKET_SECONDS)}", "by")
        width = BUCKET_SECONDS[bucket]
        if not (math.isfinite(since) and math.isfinite(until)):
            raise UsageQueryError("since and until must be finite times", "since")
        if until <= since:
            raise UsageQueryError("until must be later than since", "until")
        first = math.floor(since / width)
        last = math.ceil(until / width)  # exclusive
        if last - first > MAX_BUCKETS:
            raise UsageQueryError(
                f"{last - first} {bucket} buckets is too many (at most {MAX_BUCKETS}): "
                "choose a larger bucket or a shorter range",
                "by",
            )
        since = float(first * width)

        where = "time >= :since AND time < :until"
        params: dict[str, Any] = {"since": since, "until": until, "width": width}
        if key_id is not None:
            where += " AND key_id = :key_id"
            params["key_id"] = key_id
        if owner is not None:
            where += " AND key_id IN (SELECT id FROM keys WHERE owner = :owner)"
            params["owner"] = owner

        series_stats = await self._grouped("CAST(time / :width AS INTEGER)", where, params)
        totals = (await self._grouped("0", where, params)).get(0, UsageStats())
        model_stats = await self._grouped("model", where, params)

        series = [
            UsageBucket(start=float(b * width), **msgspec.structs.asdict(series_stats.get(b, UsageStats())))
            for b in range(first, last)
        ]
        models = [ModelUsage(model=m, **msgspec.structs.asdict(s)) for m, s in model_stats.items()]
        models.sort(key=lambda m: (-m.requests, m.model or ""))
        return UsageReport(
            key_id=key_id,
            since=since,
            until=until,
            bucket=bucket,
            bucket_seconds=width,
            totals=totals,
            series=series,
            models=models,
        )

    async def _grouped(self, group: str, where: str, params: dict[str, Any]) -> dict[Any, UsageStats]:
        """Counts and nearest-rank p50/p95 latency per value of the ``group`` expression."""
        sql = f"""
            WITH r AS (
                SELECT {group} AS g, status, latency_ms, input_tokens, output_tokens, client_ip
                FROM request_log WHERE {where}
            ),
            ranked AS (
                SELECT g, latency_ms,
                       ROW_NUMBER() OVER (PARTITION BY g ORDER BY latency_ms) AS rn,
                       COUNT(*) OVER (PARTITION BY g) AS n
                FROM r
            ),
            pct AS (
                SELECT g,
                       MIN(CASE WHEN rn = (n * 50 + 99) / 100 THEN latency_ms END) AS p50,
                       MIN(CASE WHEN rn = (n * 95 + 99) / 100 THEN latency_ms END) AS p95
                FROM ranked GROUP BY g
            ),
            agg AS (
                SELECT g,
                       COUNT(*) AS requests,
                       SUM(status < 400) AS successes,
                       SUM(status >= 400 AND status < 500) AS f4,
                       SUM(status >= 500) AS f5,
                       SUM(input_tokens) AS tin,
                       SUM(output_tokens) AS tout,
                       COUNT(DISTINCT client_ip) AS ips
                FROM r GROUP BY g
            )
            SELECT agg.g, requests, successes, f4, f5, tin, tout, ips, p50, p95
            FROM agg JOIN pct ON pct.g IS agg.g
        """
        rows = await self._db.execute_fetchall(sql, params)
        return {
            r[0]: UsageStats(
                requests=r[1],
                successes=r[2] or 0,
                failures_4xx=r[3] or 0,
                failures_5xx=r[4] or 0,
                input_tokens=r[5] or 0,
                output_tokens=r[6] or 0,
                distinct_client_ips=r[7] or 0,
                latency_ms_p50=r[8],
                latency_ms_p95=r[9],
            )
            for r in rows
        }

    # -- what the monitor reads ------------------------------------------------

    async def keys_used_since(self, since: float) -> list[str]:
        """Active keys with any request in an hour starting at or after ``since``."""
        hour = math.floor(since / 3600) * 3600
        rows = await self._db.execute_fetchall(
            "SELECT DISTINCT h.key_id FROM usage_hourly h JOIN keys k ON k.id = h.key_id"
            " WHERE h.hour >= ? AND k.state = 'active' ORDER BY h.key_id",
            (hour,),
        )
        return [r[0] for r in rows]

    async def hourly(self, key_ids: Sequence[str], since: float) -> dict[str, list[HourlyUsage]]:
        """Each key's clock hours from ``since`` on, oldest first (hours without
        requests are absent)."""
        out: dict[str, list[HourlyUsage]] = {k: [] for k in key_ids}
        for chunk in _chunks(key_ids, 500):
            marks = ",".join("?" * len(chunk))
            for r in await self._db.execute_fetchall(
                f"SELECT key_id, hour, requests, failures_4xx, failures_5xx FROM usage_hourly"
                f" WHERE key_id IN ({marks}) AND hour >= ? ORDER BY key_id, hour",
                (*chunk, math.floor(since / 3600) * 3600),
            ):
                out[r[0]].append(HourlyUsage(start=r[1], requests=r[2], failures_4xx=r[3], failures_5xx=r[4]))
        return out

    async def client_ips(self, key_ids: Sequence[str]) -> dict[str, list[ClientIp]]:
        """Every client IP each key was seen from (within the rollups' retention)."""
        out: dict[str, list[ClientIp]] = {k: [] for k in key_ids}
        for chunk in _chunks(key_ids, 500):
            marks = ",".join("?" * len(chunk))
            for r in await self._db.execute_fetchall(
                f"SELECT key_id, ip, first_seen, last_seen, requests FROM key_ips"
                f" WHERE key_id IN ({marks}) ORDER BY key_id, first_seen, ip",
                tuple(chunk),
            ):
                out[r[0]].append(ClientIp(ip=r[1], first_seen=r[2], last_seen=r[3], requests=r[4]))
        return out

    # -- alerts ----------------------------------------------------------------

    async def record_alert(
        self,
        *,
        key_id: str,
        kind: str,
        subject: str,
        evidence: dict[str, Any],
        now: float,
        cooldown: float,
    ) -> AlertRow | None:
        """Store a finding unless the same condition was already reported.

        The same condition is an alert with this key, kind and subject (ever), or
        any alert of this key and kind created less than ``cooldown`` seconds ago.
        Returns the new alert, or None when it was a duplicate.
        """
        if kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {kind!r}")
        alert_id = new_alert_id()
        async with self._store.transaction() as db:
            if await db.execute_fetchall(
                "SELECT 1 FROM alerts WHERE key_id = ? AND kind = ? AND (subject = ? OR created_at > ?) LIMIT 1",
                (key_id, kind, subject, now - cooldown),
            ):
                return None
            await db.execute(
                "INSERT INTO alerts (id, key_id, kind, subject, evidence, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, key_id, kind, subject, msgspec.json.encode(evidence).decode(), now),
            )
        return await self.get_alert(alert_id)

    async def get_alert(self, alert_id: str) -> AlertRow | None:
        row = _first(await self._db.execute_fetchall(f"{_ALERT_SELECT} WHERE id = ?", (alert_id,)))
        return _alert_row(row) if row else None

    async def list_alerts(
        self,
        *,
        kind: str | None = None,
        key_id: str | None = None,
        acknowledged: bool | None = False,
        since: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 100,
        owner: str | None = None,
    ) -> list[AlertRow]:
        """Newest first. ``acknowledged``: False only open alerts, True only
        acknowledged ones, None both. ``before`` is a (created_at, id) cursor.
        ``owner``: only alerts of that user's keys."""
        clauses: list[str] = []
        args: list[Any] = []
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        if key_id is not None:
            clauses.append("key_id = ?")
            args.append(key_id)
        if owner is not None:
            clauses.append("key_id IN (SELECT id FROM keys WHERE owner = ?)")
            args.append(owner)
        if acknowledged is True:
            clauses.append("acknowledged_at IS NOT NULL")
        elif acknowledged is False:
            clauses.append("acknowledged_at IS NULL")
        if since is not None:
            clauses.append("created_at >= ?")
            args.append(since)
        if before is not None:
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend([before[0], before[0], before[1]])
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._db.execute_fetchall(
            f"{_ALERT_SELECT}{where} ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit)
        )
        return [_alert_row(r) for r in rows]

    async def acknowledge_alert(self, alert_id: str, *, now: float) -> AlertRow | None:
        """Mark an alert acknowledged (the first acknowledgement's time is kept).
        None when there is no such alert."""
        async with self._store.transaction() as db:
            cur = await db.execute(
                "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, ?) WHERE id = ?",
                (now, alert_id),
            )
            if cur.rowcount == 0:
                return None
        return await self.get_alert(alert_id)

    async def alerts_to_notify(self, *, created_after: float, max_attempts: int, limit: int = 100) -> list[AlertRow]:
        """Alerts the webhook has not accepted yet, oldest first."""
        rows = await self._db.execute_fetchall(
            f"{_ALERT_SELECT} WHERE notified_at IS NULL AND notify_attempts < ? AND created_at > ?"
            " ORDER BY created_at, id LIMIT ?",
            (max_attempts, created_after, limit),
        )
        return [_alert_row(r) for r in rows]

    async def note_notification(self, alert_id: str, *, delivered_at: float | None) -> None:
        """Count one delivery round; ``delivered_at`` set when the webhook accepted it."""
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE alerts SET notify_attempts = notify_attempts + 1,"
                " notified_at = COALESCE(?, notified_at) WHERE id = ?",
                (delivered_at, alert_id),
            )

    # -- leases ----------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds. True when ``holder``
        holds it afterwards (it was free, expired, or already theirs)."""
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
                (name, holder, now + ttl, now),
            )
            row = _first(await db.execute_fetchall("SELECT holder FROM leases WHERE name = ?", (name,)))
        return row is not None and row[0] == holder

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._store.transaction() as db:
            await db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


async def write_requests(
    db: aiosqlite.Connection, records: Sequence[RequestRecord], pause: Callable[[], object] | None = None
) -> None:
    """The inserts of ``Analytics.add_requests`` for a caller that already holds a
    write transaction on ``db`` (for instance to write the key totals atomically).

    The log rows go in chunks of ``WRITE_CHUNK``, with ``pause()`` called between
    two chunks: the usage writer process passes ``os.sched_yield`` there, so that
    a gateway worker on the same CPU waits at most one chunk (a few hundred
    microseconds) for it, never a whole batch.
    """
    for start in range(0, len(records), WRITE_CHUNK):
        if start and pause is not None:
            pause()
        await db.executemany(
            "INSERT INTO request_log (time, key_id, model, status, latency_ms, input_tokens, output_tokens,"
            " client_ip, user_agent, caller_request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.time,
                    r.key_id,
                    _cut(r.model, MAX_MODEL),
                    r.status,
                    r.latency_ms,
                    r.input_tokens,
                    r.output_tokens,
                    r.client_ip,
                    _cut(r.user_agent, MAX_USER_AGENT),
                    r.caller_request_id,
                )
                for r in records[start : start + WRITE_CHUNK]
            ],
        )
    hours: dict[tuple[str, int], list[float]] = {}
    ips: dict[tuple[str, str], list[float]] = {}
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
    await db.executemany(
        "INSERT INTO usage_hourly (key_id, hour, requests, successes, failures_4xx, failures_5xx,"
        " input_tokens, output_tokens, latency_ms_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (key_id, hour) DO UPDATE SET"
        " requests = requests + excluded.requests, successes = successes + excluded.successes,"
        " failures_4xx = failures_4xx + excluded.failures_4xx,"
        " failures_5xx = failures_5xx + excluded.failures_5xx,"
        " input_tokens = input_tokens + excluded.input_tokens,"
        " output_tokens = output_tokens + excluded.output_tokens,"
        " latency_ms_total = latency_ms_total + excluded.latency_ms_total",
        [(k, h, *v) for (k, h), v in hours.items()],
    )
    await db.executemany(
        "INSERT INTO key_ips (key_id, ip, first_seen, last_seen, requests) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (key_id, ip) DO UPDATE SET"
        " first_seen = MIN(first_seen, excluded.first_seen),"
        " last_seen = MAX(last_seen, excluded.last_seen),"
        " requests = requests + excluded.requests",
        [(k, ip, *v) for (k, ip), v in ips.items()],
    )


def new_alert_id() -> str:
    return "alr_" + secrets.token_hex(8)


_ALERT_SELECT = (
    "SELECT id, key_id, kind, subject, evidence, created_at, acknowledged_at, notified_at, notify_attempts FROM alerts"
)


def _alert_row(r: Any) -> AlertRow:
    return AlertRow(
        id=r[0],
        key_id=r[1],
        kind=r[2],
        subject=r[3],
        evidence=msgspec.json.decode(r[4]),
        created_at=r[5],
        acknowledged_at=r[6],
        notified_at=r[7],
        notify_attempts=r[8],
    )


def _first(rows: Iterable[Any]) -> Any:
    """The first row, or None.

    Every read here is one ``execute_fetchall``: a single call on the connection's
    thread, so no statement is left open between awaits. An open statement keeps a
    read snapshot, and SQLite refuses at once ("database is locked") the write
    transaction another task of this process then begins on the same connection.
    """
    for row in rows:
        return row
    return None


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit]


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
