"""Migration 5 on a database that has keys already (version 4), on both backends: the
keys and their usage survive, a free-text owner is cleared, and keys.owner is a real
reference to users from then on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from agentrouter.store import migrate_store, open_store
from agentrouter.store.base import OwnerNotEnabled
from agentrouter.store.migrations import LATEST, MIGRATIONS, statements
from agentrouter.store.postgres import SCHEMA_TABLE
from tests.conftest import settings_on
from tests.services import PostgresServer

KEY = (
    "INSERT INTO keys (id, name, prefix, digest, tag, slot, scope, owner, state, created_at)"
    " VALUES ('key_1', 'old', 'sk-ar-x…', {digest}, 7, 0, 'inference', 'someone@example.com', 'active', 1.0)"
)
USAGE = "INSERT INTO key_usage (key_id, requests) VALUES ('key_1', 42)"


def _at_version_4_sqlite(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        for migration in MIGRATIONS[:4]:
            for statement in statements(migration.sqlite):
                db.execute(statement)
        db.execute("PRAGMA user_version = 4")
        db.execute(KEY.format(digest="x'" + "ab" * 32 + "'"))
        db.execute(USAGE)
    finally:
        db.close()


async def _at_version_4_postgres(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA_TABLE)
        for migration in MIGRATIONS[:4]:
            await conn.execute(migration.postgres)
        await conn.execute("INSERT INTO agentrouter_schema (version) VALUES (4)")
        await conn.execute(KEY.format(digest="'\\x" + "ab" * 32 + "'::bytea"))
        await conn.execute(USAGE)
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_migration_5_keeps_the_keys_and_makes_owner_a_reference(
    backend: str, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    assert LATEST == 5
    store_url = None
    if backend == "sqlite":
        _at_version_4_sqlite(data_dir / "agentrouter.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = server.database(migrated=False)
        request.addfinalizer(lambda: server.drop(name))
        store_url = server.url(name)
        await _at_version_4_postgres(store_url)
    settings = settings_on(data_dir, store_url=store_url)
    assert await migrate_store(settings) == (4, [5])

    store = await open_store(settings)
    try:
        [key] = await store.list_keys()
        assert (key.id, key.name, key.owner, key.slot, key.usage.requests) == ("key_1", "old", None, 0, 42)
        assert [d.hex() for d in await store.deleted_key_digests()] == []
        accounts = store.accounts
        user = await accounts.insert_user(
            id="usr_1",
            email="Ann@Example.com",
            email_key="ann@example.com",
            display_name=None,
            password_hash=None,
            email_verified_at=None,
            role="member",
            created_at=2.0,
        )
        assert user is not None and user.email == "Ann@Example.com"
        # The address is unique by its case-folded key.
        assert (
            await accounts.insert_user(
                id="usr_2",
                email="ANN@example.com",
                email_key="ann@example.com",
                display_name=None,
                password_hash=None,
                email_verified_at=None,
                role="member",
                created_at=3.0,
            )
            is None
        )
        # Refused: by the owner check in the insert's transaction, the foreign key behind it.
        with pytest.raises((OwnerNotEnabled, sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)):
            await store.insert_key(
                id="key_2",
                name=None,
                prefix="sk-ar-y…",
                digest=b"\xcd" * 32,
                tag=9,
                requests=None,
                interval=None,
                metadata={},
                scope="inference",
                owner="usr_nobody",
                created_at=4.0,
                expires_at=None,
                slot_capacity=16,
                claim=lambda slot: None,
            )
        owned = await store.insert_key(
            id="key_3",
            name=None,
            prefix="sk-ar-z…",
            digest=b"\xef" * 32,
            tag=11,
            requests=None,
            interval=None,
            metadata={},
            scope="inference",
            owner="usr_1",
            created_at=5.0,
            expires_at=None,
            slot_capacity=16,
            claim=lambda slot: None,
        )
        assert owned is not None and [k.id for k in await store.list_keys(owner="usr_1")] == ["key_3"]
        # Deleting the user leaves the key unowned (the service revokes it first).
        assert await accounts.delete_user("usr_1")
        assert (await store.get_key("key_3")).owner is None  # type: ignore[union-attr]
    finally:
        await store.close()
