"""The embedded store: one SQLite file in WAL mode, reached through aiosqlite.

The store is the source of truth for keys and usage; each gateway process keeps a
cache of the keys (the native ``KeyTable``) that it rebuilds from here. The queries
and their logic are ``store.sql``'s; this module is the driver: one connection per
process, write transactions taken up front, and the schema migrated on open (the
embedded default needs no separate step: every process opening the file migrates it
under SQLite's write lock, so there is no window where two versions meet).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from agentrouter.store.base import SchemaBehind, StoreError
from agentrouter.store.migrations import LATEST, MIGRATIONS, statements
from agentrouter.store.sql import Query, SqlStore

__all__ = ["SqliteStore"]


class _Conn:
    """``sql.Tx`` on the one aiosqlite connection."""

    __slots__ = ("_db",)

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, query: Query, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        # One execute_fetchall each: no statement stays open between awaits, where it
        # would hold a read snapshot that makes SQLite refuse another task's BEGIN
        # IMMEDIATE on this connection ("database is locked").
        return list(await self._db.execute_fetchall(query.sqlite, args))

    async def execute(self, query: Query, args: Sequence[Any] = ()) -> int:
        cur = await self._db.execute(query.sqlite, args)
        count = cur.rowcount
        await cur.close()
        return count

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None:
        await self._db.executemany(query.sqlite, rows)


class SqliteStore(SqlStore):
    backend: Literal["sqlite", "postgresql"] = "sqlite"

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._conn = _Conn(db)
        self.path = path
        self.url = str(path)
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, migrate: bool = True, check: bool = True) -> SqliteStore:
        """Open (and create) the file; ``migrate``: apply pending migrations first;
        ``check``: refuse a database that is behind or ahead (``SchemaBehind``)."""
        db = await aiosqlite.connect(path, isolation_level=None)  # explicit transactions only
        try:
            await db.execute("PRAGMA busy_timeout=10000")
            await _enable_wal(db)
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path)
            if migrate:
                await store.migrate()
            if check:
                await store.check_schema()
        except BaseException:
            await db.close()
            raise
        return store

    def files(self) -> list[Path]:
        return [self.path]

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_Conn]:
        yield self._conn

    @asynccontextmanager
    async def _transaction(self, lock: str | None = None) -> AsyncIterator[_Conn]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so two processes
        never both read-then-write the same rows; rolled back on any error. ``lock``
        needs nothing more: SQLite's write transactions are serialised anyway.

        Transactions of one process are serialised by a lock: its tasks (requests of
        the management API, the usage flush, the monitor) share this one connection,
        and SQLite has no transaction inside a transaction."""
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def schema_version(self) -> int:
        rows = list(await self._db.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0]) if rows else 0

    async def check_schema(self) -> None:
        version = await self.schema_version()
        if version != LATEST:
            raise SchemaBehind(schema_message(self.url, version))

    async def migrate(self) -> tuple[int, list[int]]:
        """Apply the pending migrations: (the version before, the versions applied)."""
        current = await self.schema_version()
        if current >= LATEST:
            return current, []
        applied: list[int] = []
        # Foreign keys off while migrating (SQLite's procedure for rebuilding a table
        # that others reference; the pragma is a no-op inside a transaction), then
        # checked in full before the commit: a migration that breaks one rolls back.
        await self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            async with self._transaction():
                # Read again inside the lock: another process may have migrated meanwhile.
                current = await self.schema_version()
                for migration in MIGRATIONS[current:]:
                    for statement in statements(migration.sqlite):
                        await self._db.execute(statement)
                    await self._db.execute(f"PRAGMA user_version = {migration.version}")
                    applied.append(migration.version)
                broken = list(await self._db.execute_fetchall("PRAGMA foreign_key_check"))
                if broken:
                    raise StoreError(f"the migration broke {len(broken)} foreign key(s), e.g. {tuple(broken[0])}")
        finally:
            await self._db.execute("PRAGMA foreign_keys=ON")
        return current, applied


def schema_message(where: str, version: int) -> str:
    if version > LATEST:
        return (
            f"the database {where} is at schema version {version}, newer than this AgentRouter "
            f"({LATEST}); run the newer AgentRouter that migrated it"
        )
    return (
        f"the database {where} is at schema version {version}, behind this AgentRouter ({LATEST}); "
        "run `agentrouter migrate` to bring it up to date"
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
