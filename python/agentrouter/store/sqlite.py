"""The embedded store: one SQLite file in WAL mode, reached through aiosqlite.

The store is the source of truth for keys and usage; each gateway process keeps a
cache of the keys (the native ``KeyTable``) that it rebuilds from here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from agentrouter.errors import AgentRouterError
from agentrouter.store.analytics import write_requests
from agentrouter.store.migrations import MIGRATIONS
from agentrouter.store.models import KeyRow, RequestRecord, UsageDelta, UsageTotals

_KEY_COLUMNS = (
    "k.id, k.name, k.prefix, k.created_at, k.requests, k.interval, k.metadata, k.expires_at, "
    "k.state, k.scope, k.owner, k.slot, k.tag, k.rotated_to, k.deleted_at, "
    "u.requests, u.successes, u.failures_4xx, u.failures_5xx, u.input_tokens, u.output_tokens, "
    "u.latency_ms_total, u.last_used_at, u.last_client_ip"
)
_KEY_SELECT = f"SELECT {_KEY_COLUMNS} FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id"

# Columns a caller may change with update_key.
UPDATABLE = frozenset({"name", "requests", "interval", "metadata", "expires_at"})


class StoreError(AgentRouterError):
    """The store refused an operation (for example: no free limiter slot)."""


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        db = await aiosqlite.connect(path, isolation_level=None)  # explicit transactions only
        try:
            await db.execute("PRAGMA busy_timeout=10000")
            await _enable_wal(db)
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so two processes
        never both read-then-write the same rows; rolled back on any error.

        Transactions of one process are serialised by a lock: its tasks (requests of
        the management API, the usage flush, the monitor) share this one connection,
        and SQLite has no transaction inside a transaction."""
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def schema_version(self) -> int:
        rows = list(await self._db.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0]) if rows else 0

    async def _migrate(self) -> None:
        if await self.schema_version() >= len(MIGRATIONS):
            return
        # Foreign keys off while migrating (SQLite's procedure for rebuilding a table
        # that others reference; the pragma is a no-op inside a transaction), then
        # checked in full before the commit: a migration that breaks one rolls back.
        await self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            async with self.transaction() as db:
                # Read again inside the lock: another process may have migrated meanwhile.
                async with db.execute("PRAGMA user_version") as cur:
                    row = await cur.fetchone()
                current = int(row[0]) if row else 0
                for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                    for statement in _statements(script):
                        await db.execute(statement)
                    await db.execute(f"PRAGMA user_version = {version}")
                broken = list(await db.execute_fetchall("PRAGMA foreign_key_check"))
                if broken:
                    raise StoreError(f"the migration broke {len(broken)} foreign key(s), e.g. {tuple(broken[0])}")
        finally:
            await self._db.execute("PRAGMA foreign_keys=ON")

    # -- keys ----------------------------------------------------------------

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
        before_commit: Callable[[aiosqlite.Connection], Any] | None = None,
    ) -> KeyRow:
        """Insert a key and give it the lowest free limiter slot.

        ``claim(slot)`` runs inside the transaction, after the slot is chosen and
        before the commit, so the slot is live by the time anyone can read the key.
        ``before_commit`` lets a caller (rotation) change other rows atomically.
        """
        async with self.transaction() as db:
            slot = await self._free_slot(db)
            if slot >= slot_capacity:
                raise StoreError(f"all {slot_capacity} limiter slots are in use; delete unused keys")
            await db.execute(
                "INSERT INTO keys (id, name, prefix, digest, tag, slot, requests, interval, metadata,"
                " scope, owner, state, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)",
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
            if before_commit is not None:
                await before_commit(db)
            claim(slot)
        row = await self.get_key(id)
        assert row is not None
        return row

    @staticmethod
    async def _free_slot(db: aiosqlite.Connection) -> int:
        async with db.execute(
            "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM keys WHERE slot = 0) THEN 0 ELSE"
            " (SELECT MIN(a.slot) + 1 FROM keys a WHERE a.slot IS NOT NULL AND NOT EXISTS"
            "  (SELECT 1 FROM keys b WHERE b.slot = a.slot + 1)) END"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # Reads outside a transaction are one execute_fetchall each: no statement stays
    # open between awaits, where it would hold a read snapshot that makes SQLite
    # refuse another task's BEGIN IMMEDIATE on this connection ("database is locked").

    async def get_key(self, key_id: str) -> KeyRow | None:
        rows = list(await self._db.execute_fetchall(f"{_KEY_SELECT} WHERE k.id = ?", (key_id,)))
        return _key_row(rows[0]) if rows else None

    async def list_keys(self, *, include_deleted: bool = False, owner: str | None = None) -> list[KeyRow]:
        """Active keys (and deleted ones with ``include_deleted``); only ``owner``'s
        when given."""
        clauses: list[str] = [] if include_deleted else ["k.state = 'active'"]
        args: list[Any] = []
        if owner is not None:
            clauses.append("k.owner = ?")
            args.append(owner)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._db.execute_fetchall(f"{_KEY_SELECT}{where} ORDER BY k.created_at, k.id", args)
        return [_key_row(r) for r in rows]

    async def active_keys_with_digests(self) -> list[tuple[bytes, KeyRow]]:
        """Everything a gateway process needs to build its key table."""
        rows = await self._db.execute_fetchall(
            f"SELECT k.digest, {_KEY_COLUMNS} FROM keys k LEFT JOIN key_usage u ON u.key_id = k.id"
            " WHERE k.state = 'active'"
        )
        return [(bytes(r[0]), _key_row(r[1:])) for r in rows]

    async def deleted_key_digests(self) -> list[bytes]:
        """The digests of deleted keys: the key table keeps them to refuse those keys
        as deleted rather than unknown."""
        rows = await self._db.execute_fetchall("SELECT digest FROM keys WHERE state = 'deleted'")
        return [bytes(r[0]) for r in rows]

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRow | None:
        """Change updatable columns of an active key; None when there is no such key."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise StoreError(f"cannot update {', '.join(sorted(unknown))}")
        if changes:
            values = [msgspec.json.encode(v).decode() if col == "metadata" else v for col, v in changes.items()]
            assignments = ", ".join(f"{col} = ?" for col in changes)
            async with self.transaction() as db:
                cur = await db.execute(
                    f"UPDATE keys SET {assignments} WHERE id = ? AND state = 'active'",
                    (*values, key_id),
                )
                if cur.rowcount == 0:
                    return None
        row = await self.get_key(key_id)
        return row if row is not None and row.state == "active" else None

    async def delete_key(self, key_id: str, *, now: float, revoke: Callable[[int, int], None]) -> KeyRow | None:
        """Mark a key deleted and free its slot. ``revoke(slot, tag)`` runs before the
        commit: if the commit fails the key is refused anyway (fail closed)."""
        async with self.transaction() as db:
            async with db.execute("SELECT slot, tag FROM keys WHERE id = ? AND state = 'active'", (key_id,)) as cur:
                found = await cur.fetchone()
            if found is None:
                return None
            await db.execute(
                "UPDATE keys SET state = 'deleted', slot = NULL, deleted_at = ? WHERE id = ?",
                (now, key_id),
            )
            if found[0] is not None:
                revoke(int(found[0]), int(found[1]))
        return await self.get_key(key_id)

    # -- usage ---------------------------------------------------------------

    async def add_usage(
        self,
        deltas: Sequence[UsageDelta],
        requests: Sequence[RequestRecord] = (),
        *,
        pause: Callable[[], object] | None = None,
    ) -> None:
        """Add a batch of per-key usage totals and the request-log rows of the same
        requests (``analytics.write_requests``: the log and its rollups) in one
        transaction: the totals and the log never disagree, and a failed write
        leaves neither. ``pause`` is called between chunks of log rows."""
        if not deltas and not requests:
            return
        async with self.transaction() as db:
            if requests:
                await write_requests(db, requests, pause)
            await db.executemany(
                "INSERT INTO key_usage (key_id, requests, successes, failures_4xx, failures_5xx,"
                " input_tokens, output_tokens, latency_ms_total, last_used_at, last_client_ip)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key_id) DO UPDATE SET"
                " requests = requests + excluded.requests,"
                " successes = successes + excluded.successes,"
                " failures_4xx = failures_4xx + excluded.failures_4xx,"
                " failures_5xx = failures_5xx + excluded.failures_5xx,"
                " input_tokens = input_tokens + excluded.input_tokens,"
                " output_tokens = output_tokens + excluded.output_tokens,"
                " latency_ms_total = latency_ms_total + excluded.latency_ms_total,"
                " last_client_ip = CASE WHEN excluded.last_used_at >= COALESCE(last_used_at, 0)"
                "   THEN COALESCE(excluded.last_client_ip, last_client_ip) ELSE last_client_ip END,"
                " last_used_at = MAX(COALESCE(last_used_at, 0), excluded.last_used_at)",
                [
                    (
                        d.key_id,
                        d.requests,
                        d.successes,
                        d.failures_4xx,
                        d.failures_5xx,
                        d.input_tokens,
                        d.output_tokens,
                        d.latency_ms_total,
                        d.last_used_at,
                        d.last_client_ip,
                    )
                    for d in deltas
                ],
            )


def _key_row(r: sqlite3.Row | tuple[Any, ...]) -> KeyRow:
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


async def _enable_wal(db: aiosqlite.Connection) -> None:
    """Switch to WAL (a persistent property of the file). SQLite answers "database is
    locked" at once, without its busy handler, while another connection opening a
    new file at the same moment holds the lock, so wait and try again."""
    for attempt in range(100):
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            await asyncio.sleep(0.01 + 0.01 * (attempt % 10))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
