"""Every query of the store, once, and the logic around them for every backend.

``SqlStore`` implements the ``Store`` interface on a small driver (a read outside a
transaction, and a transaction that can fetch, execute and executemany); the SQLite
and PostgreSQL stores only supply the driver, the schema version and the open.

Query text is written once, with ``?`` placeholders and SQL both dialects agree on
(``CASE`` where SQLite would write the two-argument ``MAX``/``MIN`` and PostgreSQL
``GREATEST``/``LEAST``, ``IS NOT DISTINCT FROM``, ``ON CONFLICT … DO UPDATE``). A
``Query`` holds both texts: SQLite's as written, PostgreSQL's with ``?`` turned into
``$1…$n`` when the query is made (at import for the fixed ones, cached for the few
built at run time). Where the dialects differ (the bucket of a time), the query
gives PostgreSQL's text beside SQLite's.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from agentrouter.store.analytics import (
    BUCKET_SECONDS,
    MAX_BUCKETS,
    MAX_MODEL,
    MAX_USER_AGENT,
    PRUNE_BATCH,
    WRITE_CHUNK,
    Bucket,
    ClientIp,
    HourlyUsage,
    ModelUsage,
    UsageBucket,
    UsageQueryError,
    UsageReport,
    UsageStats,
    cut,
    new_alert_id,
    rollups,
)
from agentrouter.store.base import OwnerNotEnabled, StoreError
from agentrouter.store.models import (
    ALERT_KINDS,
    MAX_CALLER_REQUEST_ID,
    AlertRow,
    KeyRow,
    RequestRecord,
    UsageDelta,
    UsageTotals,
)

if TYPE_CHECKING:
    from agentrouter.store.accounts import AccountStore

__all__ = ["UPDATABLE", "Query", "SqlStore", "Tx", "q"]

# Columns a caller may change with update_key.
UPDATABLE = frozenset({"name", "requests", "interval", "metadata", "expires_at"})


def to_dollar(text: str) -> str:
    """``?`` placeholders (outside quoted literals) as PostgreSQL's ``$1…$n``."""
    out: list[str] = []
    n = 0
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif ch == "?" and not quoted:
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


class Query:
    """One statement in both dialects."""

    __slots__ = ("postgres", "sqlite")

    def __init__(self, sqlite: str, postgres: str | None = None) -> None:
        self.sqlite = sqlite
        self.postgres = to_dollar(sqlite if postgres is None else postgres)

    def __repr__(self) -> str:
        return f"Query({self.sqlite!r})"


@functools.lru_cache(maxsize=512)
def q(sqlite: str, postgres: str | None = None) -> Query:
    """A query built at run time (a variable number of conditions or values)."""
    return Query(sqlite, postgres)


class Tx(Protocol):
    """What the queries run on: a transaction, or a read-only connection."""

    async def fetch(self, query: Query, args: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    async def execute(self, query: Query, args: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None: ...


# -- the queries -------------------------------------------------------------------

_KEY_COLUMNS = (
    "k.id, k.name, k.prefix, k.created_at, k.requests, k.interval, k.metadata, k.expires_at, "
    "k.state, k.scope, k.owner, k.slot, k.tag, k.rotated_to, k.deleted_at, "
    "u.requests, u.successes, u.failures_4xx, u.failures_5xx, u.input_tokens, u.output_tokens, "
    "u.latency_ms_total, u.last_used_at, u.last_client_ip"
)
_KEY_SELECT = f"SELECT {_KEY_COLUMNS} FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id"

GET_KEY = Query(f"{_KEY_SELECT} WHERE k.id = ?")
LIST_ACTIVE_KEYS = Query(f"{_KEY_SELECT} WHERE k.state = 'active' ORDER BY k.created_at, k.id")
LIST_ALL_KEYS = Query(f"{_KEY_SELECT} ORDER BY k.created_at, k.id")
LIST_ACTIVE_OWNED = Query(f"{_KEY_SELECT} WHERE k.state = 'active' AND k.owner = ? ORDER BY k.created_at, k.id")
LIST_ALL_OWNED = Query(f"{_KEY_SELECT} WHERE k.owner = ? ORDER BY k.created_at, k.id")
ACTIVE_KEYS_WITH_DIGESTS = Query(
    f"SELECT k.digest, {_KEY_COLUMNS} FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id WHERE k.state = 'active'"
)
DELETED_DIGESTS = Query("SELECT digest FROM keys WHERE state = 'deleted'")
FREE_SLOT = Query(
    "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM keys WHERE slot = 0) THEN 0 ELSE"
    " (SELECT MIN(a.slot) + 1 FROM keys a WHERE a.slot IS NOT NULL AND NOT EXISTS"
    "  (SELECT 1 FROM keys b WHERE b.slot = a.slot + 1)) END"
)
INSERT_KEY = Query(
    "INSERT INTO keys (id, name, prefix, digest, tag, slot, requests, interval, metadata,"
    " scope, owner, state, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)"
)
OWNER_ENABLED = Query(
    "SELECT 1 FROM users WHERE id = ? AND disabled = 0",
    "SELECT 1 FROM users WHERE id = ? AND disabled = 0 FOR SHARE",
)
RETIRE_KEY = Query(
    "UPDATE keys SET expires_at = ?, rotated_to = ? WHERE id = ? AND state = 'active' AND rotated_to IS NULL"
)
KEY_SLOT = Query("SELECT slot, tag FROM keys WHERE id = ? AND state = 'active'")
DELETE_KEY = Query("UPDATE keys SET state = 'deleted', slot = NULL, deleted_at = ? WHERE id = ? AND state = 'active'")

INSERT_BATCH = Query("INSERT INTO usage_batches (id, committed_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
ADD_KEY_USAGE = Query(
    "INSERT INTO key_usage (key_id, requests, successes, failures_4xx, failures_5xx,"
    " input_tokens, output_tokens, latency_ms_total, last_used_at, last_client_ip)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (key_id) DO UPDATE SET"
    " requests = key_usage.requests + excluded.requests,"
    " successes = key_usage.successes + excluded.successes,"
    " failures_4xx = key_usage.failures_4xx + excluded.failures_4xx,"
    " failures_5xx = key_usage.failures_5xx + excluded.failures_5xx,"
    " input_tokens = key_usage.input_tokens + excluded.input_tokens,"
    " output_tokens = key_usage.output_tokens + excluded.output_tokens,"
    " latency_ms_total = key_usage.latency_ms_total + excluded.latency_ms_total,"
    " last_client_ip = CASE WHEN excluded.last_used_at >= COALESCE(key_usage.last_used_at, 0)"
    "   THEN COALESCE(excluded.last_client_ip, key_usage.last_client_ip) ELSE key_usage.last_client_ip END,"
    " last_used_at = CASE WHEN excluded.last_used_at > COALESCE(key_usage.last_used_at, 0)"
    "   THEN excluded.last_used_at ELSE COALESCE(key_usage.last_used_at, 0) END"
)
INSERT_REQUESTS = Query(
    "INSERT INTO request_log (time, key_id, model, status, latency_ms, input_tokens, output_tokens,"
    " client_ip, user_agent, caller_request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
ADD_HOURLY = Query(
    "INSERT INTO usage_hourly (key_id, hour, requests, successes, failures_4xx, failures_5xx,"
    " input_tokens, output_tokens, latency_ms_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (key_id, hour) DO UPDATE SET"
    " requests = usage_hourly.requests + excluded.requests,"
    " successes = usage_hourly.successes + excluded.successes,"
    " failures_4xx = usage_hourly.failures_4xx + excluded.failures_4xx,"
    " failures_5xx = usage_hourly.failures_5xx + excluded.failures_5xx,"
    " input_tokens = usage_hourly.input_tokens + excluded.input_tokens,"
    " output_tokens = usage_hourly.output_tokens + excluded.output_tokens,"
    " latency_ms_total = usage_hourly.latency_ms_total + excluded.latency_ms_total"
)
ADD_KEY_IPS = Query(
    "INSERT INTO key_ips (key_id, ip, first_seen, last_seen, requests) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key_id, ip) DO UPDATE SET"
    " first_seen = CASE WHEN excluded.first_seen < key_ips.first_seen"
    "   THEN excluded.first_seen ELSE key_ips.first_seen END,"
    " last_seen = CASE WHEN excluded.last_seen > key_ips.last_seen"
    "   THEN excluded.last_seen ELSE key_ips.last_seen END,"
    " requests = key_ips.requests + excluded.requests"
)
_REQUEST_COLUMNS = (
    "key_id, time, model, status, latency_ms, input_tokens, output_tokens, client_ip, user_agent, caller_request_id"
)
REQUEST_LOG = Query(f"SELECT {_REQUEST_COLUMNS} FROM request_log ORDER BY id LIMIT ?")
REQUEST_LOG_OF_KEY = Query(f"SELECT {_REQUEST_COLUMNS} FROM request_log WHERE key_id = ? ORDER BY id LIMIT ?")
PRUNE_LOG = Query(
    "DELETE FROM request_log WHERE id IN (SELECT id FROM request_log WHERE time < ? ORDER BY time LIMIT ?)"
)
PRUNE_BATCHES = Query("DELETE FROM usage_batches WHERE committed_at < ?")
PRUNE_HOURLY = Query("DELETE FROM usage_hourly WHERE hour < ?")
PRUNE_IPS = Query("DELETE FROM key_ips WHERE last_seen < ?")
OLDEST_REQUEST = Query("SELECT MIN(time) FROM request_log")
COUNT_REQUESTS = Query("SELECT COUNT(*) FROM request_log")
COUNT_REQUESTS_OF_KEY = Query("SELECT COUNT(*) FROM request_log WHERE key_id = ?")
KEYS_USED_SINCE = Query(
    "SELECT DISTINCT h.key_id FROM usage_hourly h JOIN keys k ON k.id = h.key_id"
    " WHERE h.hour >= ? AND k.state = 'active' ORDER BY h.key_id"
)

_ALERT_SELECT = (
    "SELECT id, key_id, kind, subject, evidence, created_at, acknowledged_at, notified_at, notify_attempts FROM alerts"
)
GET_ALERT = Query(f"{_ALERT_SELECT} WHERE id = ?")
ALERT_EXISTS = Query("SELECT 1 FROM alerts WHERE key_id = ? AND kind = ? AND (subject = ? OR created_at > ?) LIMIT 1")
INSERT_ALERT = Query("INSERT INTO alerts (id, key_id, kind, subject, evidence, created_at) VALUES (?, ?, ?, ?, ?, ?)")
ACKNOWLEDGE_ALERT = Query("UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, ?) WHERE id = ?")
ALERTS_TO_NOTIFY = Query(
    f"{_ALERT_SELECT} WHERE notified_at IS NULL AND notify_attempts < ? AND created_at > ?"
    " ORDER BY created_at, id LIMIT ?"
)
NOTE_NOTIFICATION = Query(
    "UPDATE alerts SET notify_attempts = notify_attempts + 1, notified_at = COALESCE(?, notified_at) WHERE id = ?"
)

TAKE_LEASE = Query(
    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
    " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?"
)
GET_LEASE = Query("SELECT holder, expires_at FROM leases WHERE name = ?")
RELEASE_LEASE = Query("DELETE FROM leases WHERE name = ? AND holder = ?")

# The bucket of a request's time: SQLite's CAST truncates (times are positive);
# PostgreSQL's rounds, so it floors first.
_GROUPS = {
    "bucket": ("CAST(time / ? AS INTEGER)", "CAST(FLOOR(time / ?) AS BIGINT)"),
    "total": ("0", "0"),
    "model": ("model", "model"),
}

_GROUPED = """
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
               SUM(CASE WHEN status < 400 THEN 1 ELSE 0 END) AS successes,
               SUM(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END) AS f4,
               SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS f5,
               SUM(input_tokens) AS tin,
               SUM(output_tokens) AS tout,
               COUNT(DISTINCT client_ip) AS ips
        FROM r GROUP BY g
    )
    SELECT agg.g, requests, successes, f4, f5, tin, tout, ips, p50, p95
    FROM agg JOIN pct ON pct.g IS NOT DISTINCT FROM agg.g
"""


_SCOPES = {
    "all": "",
    "key": " AND key_id = ?",
    "owner": " AND key_id IN (SELECT id FROM keys WHERE owner = ?)",  # a user's keys
}


def _grouped_query(group: str, scope: str) -> Query:
    where = "time >= ? AND time < ?" + _SCOPES[scope]
    sqlite, postgres = _GROUPS[group]
    return Query(_GROUPED.format(group=sqlite, where=where), _GROUPED.format(group=postgres, where=where))


GROUPED = {(group, scope): _grouped_query(group, scope) for group in _GROUPS for scope in _SCOPES}


# -- the logic ---------------------------------------------------------------------


class SqlStore:
    """The ``Store`` interface on a backend's driver (``_read``, ``_transaction``)."""

    # -- what a backend supplies -------------------------------------------------

    def _read(self) -> AbstractAsyncContextManager[Tx]:
        """A connection for reads outside a transaction."""
        raise NotImplementedError

    def _transaction(self, lock: str | None = None) -> AbstractAsyncContextManager[Tx]:
        """A write transaction, rolled back on any error. ``lock``: a name that
        serialises the transactions taking it across every process and host (SQLite's
        write transactions are serialised anyway)."""
        raise NotImplementedError

    async def _fetch(self, query: Query, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        async with self._read() as db:
            return await db.fetch(query, args)

    # -- keys ----------------------------------------------------------------------

    async def insert_key(
        self,
        *,
        id: str,
        name: str | None,
        prefix: str,
        digest: bytes,
        tag: int,
        requests: int | None,
        interval: float | None,
        metadata: dict[str, Any],
        scope: str,
        owner: str | None,
        created_at: float,
        expires_at: float | None,
        slot_capacity: int,
        claim: Callable[[int], None],
        replaces: str | None = None,
        replaced_until: float | None = None,
    ) -> KeyRow | None:
        # The "keys" lock: two hosts never choose the same free slot (the unique index
        # on slot would refuse the second one anyway).
        async with self._transaction(lock="keys") as db:
            if owner is not None and not await db.fetch(OWNER_ENABLED, (owner,)):
                raise OwnerNotEnabled(f"the key's owner {owner!r} is gone or disabled")
            if replaces is not None and await db.execute(RETIRE_KEY, (replaced_until, id, replaces)) == 0:
                return None
            found = await db.fetch(FREE_SLOT)
            slot = int(found[0][0]) if found and found[0][0] is not None else 0
            if slot >= slot_capacity:
                raise StoreError(f"all {slot_capacity} limiter slots are in use; delete unused keys")
            await db.execute(
                INSERT_KEY,
                (
                    id,
                    name,
                    prefix,
                    digest,
                    tag,
                    slot,
                    requests,
                    interval,
                    msgspec.json.encode(metadata).decode(),
                    scope,
                    owner,
                    created_at,
                    expires_at,
                ),
            )
            claim(slot)
        row = await self.get_key(id)
        assert row is not None
        return row

    async def get_key(self, key_id: str) -> KeyRow | None:
        rows = await self._fetch(GET_KEY, (key_id,))
        return _key_row(rows[0]) if rows else None

    async def list_keys(self, *, include_deleted: bool = False, owner: str | None = None) -> list[KeyRow]:
        if owner is not None:
            rows = await self._fetch(LIST_ALL_OWNED if include_deleted else LIST_ACTIVE_OWNED, (owner,))
        else:
            rows = await self._fetch(LIST_ALL_KEYS if include_deleted else LIST_ACTIVE_KEYS)
        return [_key_row(r) for r in rows]

    @functools.cached_property
    def accounts(self) -> AccountStore:
        """The accounts tables (users, sessions, tokens, identities, invitations, audit)."""
        from agentrouter.store.accounts import AccountStore

        return AccountStore(self)

    async def active_keys_with_digests(self) -> list[tuple[bytes, KeyRow]]:
        rows = await self._fetch(ACTIVE_KEYS_WITH_DIGESTS)
        return [(bytes(r[0]), _key_row(r[1:])) for r in rows]

    async def deleted_key_digests(self) -> list[bytes]:
        return [bytes(r[0]) for r in await self._fetch(DELETED_DIGESTS)]

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRow | None:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise StoreError(f"cannot update {', '.join(sorted(unknown))}")
        if changes:
            columns = sorted(changes)
            values = [msgspec.json.encode(changes[c]).decode() if c == "metadata" else changes[c] for c in columns]
            assignments = ", ".join(f"{c} = ?" for c in columns)
            async with self._transaction() as db:
                query = q(f"UPDATE keys SET {assignments} WHERE id = ? AND state = 'active'")
                if await db.execute(query, (*values, key_id)) == 0:
                    return None
        row = await self.get_key(key_id)
        return row if row is not None and row.state == "active" else None

    async def delete_key(self, key_id: str, *, now: float, revoke: Callable[[int, int], None]) -> KeyRow | None:
        async with self._transaction() as db:
            found = await db.fetch(KEY_SLOT, (key_id,))
            if not found or await db.execute(DELETE_KEY, (now, key_id)) == 0:
                return None
            slot, tag = found[0][0], found[0][1]
            if slot is not None:
                revoke(int(slot), int(tag))
        return await self.get_key(key_id)

    # -- usage batches and the request log -------------------------------------------

    async def add_usage(
        self,
        deltas: Sequence[UsageDelta],
        requests: Sequence[RequestRecord] = (),
        *,
        batch_id: str | None = None,
        pause: Callable[[], object] | None = None,
    ) -> bool:
        if not deltas and not requests:
            return True
        async with self._transaction() as db:
            if batch_id is not None and await db.execute(INSERT_BATCH, (batch_id, time.time())) == 0:
                return False  # committed before: the writer's answer was lost
            if requests:
                await _write_requests(db, requests, pause)
            if deltas:
                await db.executemany(
                    ADD_KEY_USAGE,
                    [
                        (
                            d.key_id,
                            d.requests,
                            d.successes,
                            d.failures_4xx,
                            d.failures_5xx,
                            d.input_tokens,
                            d.output_tokens,
                            float(d.latency_ms_total),
                            float(d.last_used_at),
                            d.last_client_ip,
                        )
                        for d in deltas
                    ],
                )
        return True

    async def add_requests(self, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        async with self._transaction() as db:
            await _write_requests(db, records, None)

    async def request_log(self, key_id: str | None = None, *, limit: int = 1000) -> list[RequestRecord]:
        if key_id is None:
            rows = await self._fetch(REQUEST_LOG, (limit,))
        else:
            rows = await self._fetch(REQUEST_LOG_OF_KEY, (key_id, limit))
        return [
            RequestRecord(
                key_id=r[0],
                time=r[1],
                model=r[2],
                status=r[3],
                latency_ms=r[4],
                input_tokens=r[5],
                output_tokens=r[6],
                client_ip=r[7],
                user_agent=r[8],
                caller_request_id=r[9],
            )
            for r in rows
        ]

    async def prune(self, *, log_before: float, rollups_before: float | None = None) -> int:
        """In short transactions, so writers never wait long."""
        deleted = 0
        while True:
            async with self._transaction() as db:
                n = await db.execute(PRUNE_LOG, (float(log_before), PRUNE_BATCH))
            deleted += n
            if n < PRUNE_BATCH:
                break
        async with self._transaction() as db:
            await db.execute(PRUNE_BATCHES, (float(log_before),))
        if rollups_before is not None:
            async with self._transaction() as db:
                await db.execute(PRUNE_HOURLY, (math.ceil(rollups_before),))
                await db.execute(PRUNE_IPS, (float(rollups_before),))
        return deleted

    async def oldest_request(self) -> float | None:
        rows = await self._fetch(OLDEST_REQUEST)
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def count_requests(self, key_id: str | None = None) -> int:
        if key_id is None:
            rows = await self._fetch(COUNT_REQUESTS)
        else:
            rows = await self._fetch(COUNT_REQUESTS_OF_KEY, (key_id,))
        return int(rows[0][0]) if rows else 0

    # -- analytics -----------------------------------------------------------------

    async def usage(
        self,
        *,
        since: float,
        until: float,
        bucket: Bucket = "hour",
        key_id: str | None = None,
        owner: str | None = None,
    ) -> UsageReport:
        """``since`` is aligned down to a bucket boundary (UTC), so the series' buckets
        are whole and the totals equal the sum of the series. ``key_id``: one key's;
        ``owner``: the keys of that user (a member's "all usage")."""
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
        where: tuple[Any, ...] = (since, float(until))
        scope = "all"
        if key_id is not None:
            where, scope = (*where, key_id), "key"
        elif owner is not None:
            where, scope = (*where, owner), "owner"
        async with self._read() as db:
            series_stats = await _grouped(db, GROUPED["bucket", scope], (float(width), *where))
            totals = (await _grouped(db, GROUPED["total", scope], where)).get(0, UsageStats())
            model_stats = await _grouped(db, GROUPED["model", scope], where)
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

    async def keys_used_since(self, since: float) -> list[str]:
        """Active keys with any request in an hour starting at or after ``since``."""
        rows = await self._fetch(KEYS_USED_SINCE, (math.floor(since / 3600) * 3600,))
        return [r[0] for r in rows]

    async def hourly(self, key_ids: Sequence[str], since: float) -> dict[str, list[HourlyUsage]]:
        """Each key's clock hours from ``since`` on, oldest first (hours without
        requests are absent)."""
        out: dict[str, list[HourlyUsage]] = {k: [] for k in key_ids}
        hour = math.floor(since / 3600) * 3600
        async with self._read() as db:
            for chunk in _chunks(key_ids, 500):
                marks = ",".join("?" * len(chunk))
                query = q(
                    f"SELECT key_id, hour, requests, failures_4xx, failures_5xx FROM usage_hourly"
                    f" WHERE key_id IN ({marks}) AND hour >= ? ORDER BY key_id, hour"
                )
                for r in await db.fetch(query, (*chunk, hour)):
                    out[r[0]].append(HourlyUsage(start=int(r[1]), requests=r[2], failures_4xx=r[3], failures_5xx=r[4]))
        return out

    async def client_ips(self, key_ids: Sequence[str]) -> dict[str, list[ClientIp]]:
        """Every client IP each key was seen from (within the rollups' retention)."""
        out: dict[str, list[ClientIp]] = {k: [] for k in key_ids}
        async with self._read() as db:
            for chunk in _chunks(key_ids, 500):
                marks = ",".join("?" * len(chunk))
                query = q(
                    f"SELECT key_id, ip, first_seen, last_seen, requests FROM key_ips"
                    f" WHERE key_id IN ({marks}) ORDER BY key_id, first_seen, ip"
                )
                for r in await db.fetch(query, tuple(chunk)):
                    out[r[0]].append(ClientIp(ip=r[1], first_seen=r[2], last_seen=r[3], requests=r[4]))
        return out

    # -- alerts --------------------------------------------------------------------

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
        async with self._transaction(lock="alerts") as db:
            if await db.fetch(ALERT_EXISTS, (key_id, kind, subject, float(now - cooldown))):
                return None
            await db.execute(
                INSERT_ALERT, (alert_id, key_id, kind, subject, msgspec.json.encode(evidence).decode(), float(now))
            )
        return await self.get_alert(alert_id)

    async def get_alert(self, alert_id: str) -> AlertRow | None:
        rows = await self._fetch(GET_ALERT, (alert_id,))
        return _alert_row(rows[0]) if rows else None

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
        if owner is not None:
            clauses.append("key_id IN (SELECT id FROM keys WHERE owner = ?)")
            args.append(owner)
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        if key_id is not None:
            clauses.append("key_id = ?")
            args.append(key_id)
        if acknowledged is True:
            clauses.append("acknowledged_at IS NOT NULL")
        elif acknowledged is False:
            clauses.append("acknowledged_at IS NULL")
        if since is not None:
            clauses.append("created_at >= ?")
            args.append(float(since))
        if before is not None:
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend([float(before[0]), float(before[0]), before[1]])
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetch(q(f"{_ALERT_SELECT}{where} ORDER BY created_at DESC, id DESC LIMIT ?"), (*args, limit))
        return [_alert_row(r) for r in rows]

    async def acknowledge_alert(self, alert_id: str, *, now: float) -> AlertRow | None:
        """Mark an alert acknowledged (the first acknowledgement's time is kept).
        None when there is no such alert."""
        async with self._transaction() as db:
            if await db.execute(ACKNOWLEDGE_ALERT, (float(now), alert_id)) == 0:
                return None
        return await self.get_alert(alert_id)

    async def alerts_to_notify(self, *, created_after: float, max_attempts: int, limit: int = 100) -> list[AlertRow]:
        """Alerts the webhook has not accepted yet, oldest first."""
        rows = await self._fetch(ALERTS_TO_NOTIFY, (max_attempts, float(created_after), limit))
        return [_alert_row(r) for r in rows]

    async def note_notification(self, alert_id: str, *, delivered_at: float | None) -> None:
        """Count one delivery round; ``delivered_at`` set when the webhook accepted it."""
        async with self._transaction() as db:
            await db.execute(NOTE_NOTIFICATION, (None if delivered_at is None else float(delivered_at), alert_id))

    # -- leases --------------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds. True when ``holder``
        holds it afterwards (it was free, expired, or already theirs)."""
        async with self._transaction() as db:
            await db.execute(TAKE_LEASE, (name, holder, float(now + ttl), float(now)))
            rows = await db.fetch(GET_LEASE, (name,))
        return bool(rows) and rows[0][0] == holder

    async def release_lease(self, name: str, holder: str) -> None:
        async with self._transaction() as db:
            await db.execute(RELEASE_LEASE, (name, holder))

    async def lease(self, name: str) -> tuple[str, float] | None:
        rows = await self._fetch(GET_LEASE, (name,))
        return (rows[0][0], float(rows[0][1])) if rows else None


async def _write_requests(db: Tx, records: Sequence[RequestRecord], pause: Callable[[], object] | None) -> None:
    """The log rows in chunks of ``WRITE_CHUNK``, ``pause()`` between two chunks (the
    usage writer process passes ``os.sched_yield``, so that a gateway worker on the
    same CPU waits at most one chunk for it, never a whole batch), then the rollups."""
    for start in range(0, len(records), WRITE_CHUNK):
        if start and pause is not None:
            pause()
        await db.executemany(
            INSERT_REQUESTS,
            [
                (
                    float(r.time),
                    r.key_id,
                    cut(r.model, MAX_MODEL),
                    r.status,
                    float(r.latency_ms),
                    r.input_tokens,
                    r.output_tokens,
                    cut(r.client_ip, MAX_MODEL),
                    cut(r.user_agent, MAX_USER_AGENT),
                    cut(r.caller_request_id, MAX_CALLER_REQUEST_ID),
                )
                for r in records[start : start + WRITE_CHUNK]
            ],
        )
    hours, ips = rollups(records)
    await db.executemany(ADD_HOURLY, hours)
    await db.executemany(ADD_KEY_IPS, ips)


async def _grouped(db: Tx, query: Query, args: Sequence[Any]) -> dict[Any, UsageStats]:
    """Counts and nearest-rank p50/p95 latency per value of the query's group."""
    return {
        r[0]: UsageStats(
            requests=int(r[1]),
            successes=int(r[2] or 0),
            failures_4xx=int(r[3] or 0),
            failures_5xx=int(r[4] or 0),
            input_tokens=int(r[5] or 0),
            output_tokens=int(r[6] or 0),
            distinct_client_ips=int(r[7] or 0),
            latency_ms_p50=r[8],
            latency_ms_p95=r[9],
        )
        for r in await db.fetch(query, args)
    }


def _key_row(r: Sequence[Any]) -> KeyRow:
    usage = UsageTotals(
        requests=r[15] or 0,
        successes=r[16] or 0,
        failures_4xx=r[17] or 0,
        failures_5xx=r[18] or 0,
        input_tokens=r[19] or 0,
        output_tokens=r[20] or 0,
        latency_ms_total=r[21] or 0.0,
        last_used_at=r[22],
        last_client_ip=r[23],
    )
    return KeyRow(
        id=r[0],
        name=r[1],
        prefix=r[2],
        created_at=r[3],
        requests=r[4],
        interval=r[5],
        metadata=msgspec.json.decode(r[6]),
        expires_at=r[7],
        state=r[8],
        scope=r[9],
        owner=r[10],
        slot=r[11],
        tag=r[12],
        rotated_to=r[13],
        deleted_at=r[14],
        usage=usage,
    )


def _alert_row(r: Sequence[Any]) -> AlertRow:
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


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
