"""The shared store: PostgreSQL through asyncpg, with a connection pool per process.

The queries and their logic are ``store.sql``'s, the same as SQLite's; this module is
the driver:

* a pool per process (``store_pool_min``/``store_pool_max``), connections made in
  ``store_connect_timeout``; queries answer within ``command_timeout`` or count as
  the database being unavailable;
* write transactions in PostgreSQL's default isolation (read committed); the ones
  that read-then-write across hosts take a transaction-scoped advisory lock by name
  (``pg_advisory_xact_lock``): choosing a key's limiter slot, recording an alert. The
  unique index on ``keys.slot`` would refuse a duplicate slot anyway;
* the schema version in the one-row table ``agentrouter_schema``. Opening never
  migrates: ``agentrouter migrate`` does (under an advisory lock, in one transaction,
  so hosts upgrading together apply each migration once), and a database that is
  behind is refused with a message saying to run it;
* a database that cannot be reached (refused, reset, shutting down, not answering in
  time) is ``StoreUnavailable``, whose message names the URL without its password.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import asyncpg

from agentrouter.config import redact_url
from agentrouter.store.base import SchemaBehind, StoreError, StoreUnavailable
from agentrouter.store.migrations import LATEST, MIGRATIONS
from agentrouter.store.sql import Query, SqlStore

__all__ = ["PostgresStore"]

COMMAND_TIMEOUT_MIN = 30.0
"""Seconds a statement may take (at least): a usage batch of thousands of rows, a
prune of a day of the request log."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, no route
    TimeoutError,  # no connection or no answer in time
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down
    asyncpg.AdminShutdownError,  # 57P01: the server is stopping
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,  # the connection was closed under the pool
)

SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS agentrouter_schema ("
    " one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version INTEGER NOT NULL)"
)


def lock_id(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.blake2b(f"agentrouter:{name}".encode(), digest_size=8).digest(), "big", signed=True)


MIGRATE_LOCK = lock_id("migrate")


class _Conn:
    """``sql.Tx`` on one pooled asyncpg connection."""

    __slots__ = ("_c",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn

    async def fetch(self, query: Query, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self._c.fetch(query.postgres, *args))

    async def execute(self, query: Query, args: Sequence[Any] = ()) -> int:
        status: str = await self._c.execute(query.postgres, *args)  # "UPDATE 3", "INSERT 0 1"
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self._c.executemany(query.postgres, rows)


class PostgresStore(SqlStore):
    backend: Literal["sqlite", "postgresql"] = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str, timeout: float) -> None:
        self._pool = pool
        self._secret_url = url
        self.url = redact_url(url)
        self._timeout = timeout

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 5.0, check: bool = True
    ) -> PostgresStore:
        """A pool on ``url`` (``min_size`` connections made now: 0 makes them when a
        query needs one). ``check``: refuse a schema that is not this version's."""
        pool = await _pool(url, min_size=min_size, max_size=max(max_size, 1), connect_timeout=connect_timeout)
        store = cls(pool, url, connect_timeout)
        if check:
            try:
                await store.check_schema()
            except BaseException:
                await store.close()
                raise
        return store

    @classmethod
    async def migrate_url(cls, url: str, *, connect_timeout: float = 5.0) -> tuple[int, list[int]]:
        """Apply the pending migrations: (the version before, the versions applied)."""
        store = await cls.open(url, min_size=1, max_size=1, connect_timeout=connect_timeout, check=False)
        try:
            return await store.migrate()
        finally:
            await store.close()

    def files(self) -> list[Path]:
        return []

    async def close(self) -> None:
        try:
            await self._pool.close()
        except _UNAVAILABLE:
            self._pool.terminate()

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL at {self.url} is unavailable: {_reason(exc, self._secret_url)}")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_Conn]:
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                yield _Conn(conn)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    @asynccontextmanager
    async def _transaction(self, lock: str | None = None) -> AsyncIterator[_Conn]:
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                if lock is not None:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id(lock))
                yield _Conn(conn)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    async def schema_version(self) -> int:
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                if await conn.fetchval("SELECT to_regclass('agentrouter_schema')") is None:
                    return 0
                version = await conn.fetchval("SELECT version FROM agentrouter_schema")
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        return int(version or 0)

    async def check_schema(self) -> None:
        version = await self.schema_version()
        if version > LATEST:
            raise SchemaBehind(
                f"the database {self.url} is at schema version {version}, newer than this AgentRouter "
                f"({LATEST}); run the newer AgentRouter that migrated it"
            )
        if version < LATEST:
            raise SchemaBehind(
                f"the database {self.url} is at schema version {version}, behind this AgentRouter ({LATEST}); "
                "run `agentrouter migrate` (with the same settings) to bring it up to date"
            )

    async def migrate(self) -> tuple[int, list[int]]:
        applied: list[int] = []
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                # One migrator at a time, on every host; the others then find nothing to do.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
                await conn.execute(SCHEMA_TABLE)
                before = await conn.fetchval("SELECT version FROM agentrouter_schema")
                if before is None:
                    await conn.execute("INSERT INTO agentrouter_schema (version) VALUES (0)")
                    before = 0
                for migration in MIGRATIONS[before:]:
                    await conn.execute(migration.postgres)
                    applied.append(migration.version)
                if applied:
                    await conn.execute("UPDATE agentrouter_schema SET version = $1", applied[-1])
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        return int(before), applied


async def _pool(url: str, *, min_size: int, max_size: int, connect_timeout: float) -> asyncpg.Pool:
    shown = redact_url(url)
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=min(min_size, max_size),
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=max(COMMAND_TIMEOUT_MIN, connect_timeout),
        )
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {shown}: {_reason(exc, url)}; check that the server is running "
            "and store_url (AGENTROUTER_STORE_URL) names it"
        ) from exc
    except asyncpg.InvalidAuthorizationSpecificationError as exc:  # bad user or password (28xxx)
        raise StoreError(f"PostgreSQL at {shown} refused the login: {_reason(exc, url)}") from exc
    except asyncpg.InvalidCatalogNameError as exc:
        raise StoreError(
            f"PostgreSQL at {shown}: {_reason(exc, url)}; create the database (createdb) or fix store_url"
        ) from exc
    except (asyncpg.PostgresError, ValueError) as exc:
        raise StoreError(f"PostgreSQL at {shown} failed: {_reason(exc, url)}") from exc
    return pool


def _reason(exc: BaseException, url: str) -> str:
    """The error's text, never with the URL's password in it."""
    text = " ".join(f"{exc}".split()) or type(exc).__name__
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***").replace(urllib.parse.quote(password), "***")
    return text[:500]
