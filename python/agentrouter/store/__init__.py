"""Persistent state: keys, usage and the request log, alerts, leases.

``open_store(settings)`` is the one place that opens the store the settings name:
the SQLite file in the data directory (the default) or PostgreSQL (``store_url``).
Everything else sees the ``Store`` interface (``store.base``).
"""

from __future__ import annotations

from agentrouter.config import Settings
from agentrouter.store.base import SchemaBehind, Store, StoreError, StoreUnavailable
from agentrouter.store.models import KeyRow, UsageDelta, UsageTotals
from agentrouter.store.sqlite import SqliteStore

__all__ = [
    "KeyRow",
    "SchemaBehind",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UsageDelta",
    "UsageTotals",
    "migrate_store",
    "open_store",
]


async def open_store(settings: Settings, *, pool: bool = True) -> Store:
    """Open the store of ``settings``. SQLite migrates its file on open; PostgreSQL
    is never migrated here: a database that is behind raises ``SchemaBehind`` (run
    ``agentrouter migrate``), an unreachable one ``StoreUnavailable`` naming the URL
    without its password. ``pool=False``: one connection (the usage writer)."""
    if settings.store_backend == "postgresql":
        from agentrouter.store.postgres import PostgresStore

        assert settings.store_url is not None
        return await PostgresStore.open(
            settings.store_url,
            min_size=min(settings.store_pool_min, 1) if not pool else settings.store_pool_min,
            max_size=1 if not pool else settings.store_pool_max,
            connect_timeout=settings.store_connect_timeout,
        )
    return await SqliteStore.open(settings.sqlite_path)


async def migrate_store(settings: Settings) -> tuple[int, list[int]]:
    """Apply the pending migrations to the store of ``settings``: (the version before,
    the versions applied)."""
    if settings.store_backend == "postgresql":
        from agentrouter.store.postgres import PostgresStore

        assert settings.store_url is not None
        return await PostgresStore.migrate_url(settings.store_url, connect_timeout=settings.store_connect_timeout)
    store = await SqliteStore.open(settings.sqlite_path, migrate=False, check=False)
    try:
        return await store.migrate()
    finally:
        await store.close()
