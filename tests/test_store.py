"""The SQLite store on a real file: schema, slots, usage batches, atomicity."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agentrouter.core import Core
from agentrouter.store import SqliteStore, UsageDelta
from agentrouter.store.migrations import MIGRATIONS
from tests.conftest import open_core


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


async def test_a_lost_region_is_rebuilt_from_the_store(data_dir: Path) -> None:
    core = await open_core(data_dir, secret="s" * 32)
    k = (await core.keys.create()).row
    await core.close()
    (data_dir / "limiter.shm").unlink()
    core = await open_core(data_dir, secret="s" * 32)
    try:
        assert k.slot is not None and core.limiter.slot_is_live(k.slot, k.tag)
    finally:
        await core.close()
