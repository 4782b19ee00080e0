"""The store on both backends (a real SQLite file, a real private PostgreSQL): schema,
slots, usage batches and their ids, atomicity, hosts racing; PostgreSQL's own
start-up checks (behind, unreachable, never a password in a message)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from agentrouter.config import load_settings
from agentrouter.core import Core
from agentrouter.keys import KeyInputError
from agentrouter.store import (
    SchemaBehind,
    SqliteStore,
    StoreError,
    StoreUnavailable,
    UsageDelta,
    migrate_store,
    open_store,
)
from agentrouter.store.migrations import LATEST, MIGRATIONS
from agentrouter.store.models import RequestRecord
from tests.conftest import open_core
from tests.services import PostgresServer, PostgresServers, free_port

pytestmark = pytest.mark.store_backends()


async def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    stores = await asyncio.gather(*(SqliteStore.open(db) for _ in range(4)))  # racing first opens
    try:
        assert {await s.schema_version() for s in stores} == {len(MIGRATIONS)}
    finally:
        for s in stores:
            await s.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_slots_are_lowest_free_and_reused_after_delete(core: Core) -> None:
    made = [await core.keys.create() for _ in range(4)]
    assert [c.row.slot for c in made] == [0, 1, 2, 3]
    await core.keys.delete(made[1].row.id)
    again = await core.keys.create()
    assert again.row.slot == 1
    # The reused slot belongs to the new key only.
    assert core.limiter.slot_is_live(1, again.row.tag)
    assert not core.limiter.slot_is_live(1, made[1].row.tag)


async def test_a_failed_create_writes_nothing(core: Core) -> None:
    def broken_claim(slot: int) -> None:
        raise RuntimeError("limiter unavailable")

    with pytest.raises(RuntimeError):
        await core.store.insert_key(
            id="key_x",
            name=None,
            prefix="sk-ar-xxxxxx…",
            digest=b"\0" * 32,
            tag=3,
            requests=None,
            interval=None,
            metadata={},
            scope="inference",
            owner=None,
            created_at=0.0,
            expires_at=None,
            slot_capacity=10,
            claim=broken_claim,
        )
    assert await core.store.list_keys(include_deleted=True) == []


async def test_usage_batches_add_up(core: Core) -> None:
    k = (await core.keys.create()).row
    await core.store.add_usage(
        [
            UsageDelta(
                key_id=k.id,
                requests=3,
                successes=2,
                failures_4xx=1,
                input_tokens=10,
                output_tokens=20,
                latency_ms_total=30.0,
                last_used_at=100.0,
                last_client_ip="127.0.0.1",
            ),
        ]
    )
    await core.store.add_usage(
        [
            UsageDelta(
                key_id=k.id,
                requests=2,
                successes=1,
                failures_5xx=1,
                input_tokens=1,
                output_tokens=2,
                latency_ms_total=5.0,
                last_used_at=200.0,
                last_client_ip="::1",
            ),
            # An older batch from another worker must not move last-used backwards.
            UsageDelta(key_id=k.id, requests=1, successes=1, last_used_at=150.0, last_client_ip="10.0.0.9"),
        ]
    )
    u = (await core.keys.get(k.id)).usage
    assert (u.requests, u.successes, u.failures_4xx, u.failures_5xx) == (6, 4, 1, 1)
    assert (u.input_tokens, u.output_tokens, u.latency_ms_total) == (11, 22, 35.0)
    assert (u.last_used_at, u.last_client_ip) == (200.0, "::1")


async def test_only_updatable_fields_change(core: Core) -> None:
    k = (await core.keys.create()).row
    with pytest.raises(Exception, match="cannot update"):
        await core.store.update_key(k.id, {"digest": b"x", "name": "n"})
    assert (await core.keys.get(k.id)).name is None


async def test_a_lost_region_is_rebuilt_from_the_store(data_dir: Path, store_url: str | None) -> None:
    core = await open_core(data_dir, secret="s" * 32, store_url=store_url)
    k = (await core.keys.create()).row
    await core.close()
    (data_dir / "limiter.shm").unlink()
    core = await open_core(data_dir, secret="s" * 32, store_url=store_url)
    try:
        assert k.slot is not None and core.limiter.slot_is_live(k.slot, k.tag)
    finally:
        await core.close()


async def test_a_usage_batch_is_committed_once(core: Core) -> None:
    """A writer that sends a batch again (its answer was lost after the commit) does not
    count it twice: the store commits the batch id with the batch."""
    k = (await core.keys.create()).row
    delta = UsageDelta(key_id=k.id, requests=2, successes=2, last_used_at=100.0)
    log = [RequestRecord(key_id=k.id, time=100.0, model="m", status=200, latency_ms=1.0)] * 2
    assert await core.store.add_usage([delta], log, batch_id="w1-1") is True
    assert await core.store.add_usage([delta], log, batch_id="w1-1") is False  # skipped
    assert await core.store.add_usage([delta], log, batch_id="w2-1") is True  # another writer's
    assert (await core.keys.get(k.id)).usage.requests == 4 == await core.store.count_requests(k.id)
    # A batch that failed wrote nothing, its id included: sent again, it counts.
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error
        await core.store.add_usage([UsageDelta(key_id="key_missing", requests=1)], [], batch_id="w1-2")
    assert await core.store.add_usage([delta], [], batch_id="w1-2") is True
    assert (await core.keys.get(k.id)).usage.requests == 6
    # Batch ids are pruned with the request log.
    await core.store.prune(log_before=time.time() + 1)
    assert await core.store.add_usage([delta], [], batch_id="w1-1") is True


async def test_hosts_racing_for_slots_get_distinct_ones(tmp_path: Path, store_url: str | None) -> None:
    """Two hosts (their own data directories and limiter regions on one PostgreSQL
    database; on SQLite two cores on one data directory) creating keys at once never
    share a slot, and rotating one key from both at once leaves one successor."""
    dirs = [tmp_path / "a", tmp_path / ("a" if store_url is None else "b")]
    cores = [await open_core(d, store_url=store_url) for d in dirs]
    try:
        made = await asyncio.gather(*(cores[i % 2].keys.create() for i in range(16)))
        assert sorted(m.row.slot for m in made if m.row.slot is not None) == list(range(16))
        target = made[0].row.id
        results = await asyncio.gather(*(c.keys.rotate(target, grace=60) for c in cores), return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 1, results
        assert (await cores[0].keys.get(target)).rotated_to is not None
    finally:
        for c in cores:
            await c.close()


# ------------------------------------------------------------------ PostgreSQL only


async def test_postgres_is_never_migrated_behind_the_operators_back(postgres_server: PostgresServer) -> None:
    name = postgres_server.database(migrated=False)
    url = postgres_server.url(name, password="hunter2-secret")
    settings = load_settings(env={"AGENTROUTER_STORE_URL": url})
    with pytest.raises(SchemaBehind, match=r"schema version 0, behind .* run `agentrouter migrate`") as behind:
        await open_store(settings)
    assert "hunter2-secret" not in str(behind.value) and "postgres:***@" in str(behind.value)
    assert await migrate_store(settings) == (0, list(range(1, LATEST + 1)))
    assert await migrate_store(settings) == (LATEST, [])  # again: nothing to do
    store = await open_store(settings)
    try:
        assert await store.schema_version() == LATEST
    finally:
        await store.close()
    postgres_server.drop(name)


async def test_postgres_unreachable_or_missing_names_the_url_without_its_password(
    postgres_server: PostgresServer,
) -> None:
    down = f"postgresql://agentrouter:pa55word-xyz@127.0.0.1:{free_port()}/agentrouter"
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL at") as exc:
        await open_store(load_settings(env={"AGENTROUTER_STORE_URL": down}))
    assert "pa55word-xyz" not in str(exc.value) and "agentrouter:***@127.0.0.1" in str(exc.value)
    missing = postgres_server.url("no_such_db", password="pa55word-xyz")
    with pytest.raises(StoreError, match='"no_such_db" does not exist') as exc2:
        await open_store(load_settings(env={"AGENTROUTER_STORE_URL": missing}))
    assert "pa55word-xyz" not in str(exc2.value)


async def test_a_stopped_postgres_is_store_unavailable_and_then_back(postgres_servers: PostgresServers) -> None:
    server = postgres_servers.start()
    server.sql("CREATE DATABASE a")
    settings = load_settings(env={"AGENTROUTER_STORE_URL": server.url("a")})
    await migrate_store(settings)
    store = await open_store(settings)
    try:
        assert await store.list_keys() == []
        server.stop()
        with pytest.raises(StoreUnavailable, match=r"PostgreSQL at postgresql://postgres@127\.0\.0\.1"):
            await store.list_keys()
        with pytest.raises(StoreUnavailable):
            await store.add_usage([UsageDelta(key_id="k", requests=1)], [], batch_id="b")
        server.start()
        assert await store.list_keys() == []  # the pool reconnects
    finally:
        await store.close()


async def test_a_nul_in_a_callers_text_never_blocks_a_batch(core: Core) -> None:
    """A JSON string may carry U+0000 (a model name); PostgreSQL's text cannot hold it.
    Every backend stores it as U+FFFD, so such a request never makes its batch fail
    (and be held, and block the usage of everyone after it)."""
    k = (await core.keys.create()).row
    odd = RequestRecord(key_id=k.id, time=100.0, model="gpt\x00-4o", status=400, latency_ms=1.0, user_agent="a\x00")
    assert await core.store.add_usage([UsageDelta(key_id=k.id, requests=1)], [odd], batch_id="nul")
    [row] = await core.store.request_log(k.id)
    assert (row.model, row.user_agent) == ("gpt\ufffd-4o", "a\ufffd")
    with pytest.raises(KeyInputError, match="NUL"):
        await core.keys.create(name="a\x00b")
