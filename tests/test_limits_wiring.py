"""The Redis limiter wired in: settings, ``Core.from_settings``, the key authenticator
and the key service against a real private redis-server.

"Another host" here is what another host does to the shared state: it writes the
store (the same SQLite file, through ``Store``, without touching this host's
limiter region) and Redis (its revoked flag, its generation, with or without the
announcement). So what refuses or admits here is what came through Redis, never
this host's shared memory. (The real multi-host test, separate data directories on
one PostgreSQL store, is for when the store can be shared.)
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentrouter._core import display_prefix, generate_key
from agentrouter.auth import INFERENCE_SCOPE, Refusal
from agentrouter.config import ConfigError, load_settings, redact_url
from agentrouter.core import Core
from agentrouter.limits import FailureMode, SharedMemoryLimiter
from agentrouter.limits.failover import FailoverLimiter
from agentrouter.store import Store
from agentrouter.store.sqlite import SqliteStore
from tests.conftest import SECRET
from tests.services import RedisServer, RedisServers, free_port
from tests.waiting import until, until_async


def settings(data_dir: Path, url: str, mode: str = "local", **env: str) -> object:
    return load_settings(
        env={
            "AGENTROUTER_DATA_DIR": str(data_dir),
            "AGENTROUTER_SECRET": SECRET,
            "AGENTROUTER_LIMITER_URL": url,
            "AGENTROUTER_LIMITER_FAILURE_MODE": mode,
            **env,
        }
    )


async def open_redis_core(data_dir: Path, url: str, mode: str = "local") -> Core:
    return await Core.from_settings(settings(data_dir, url, mode))  # type: ignore[arg-type]


@pytest.fixture
async def rcore(data_dir: Path, redis_url: str) -> AsyncIterator[Core]:
    core = await open_redis_core(data_dir, redis_url)
    await core.auth.reload()
    try:
        yield core
    finally:
        await core.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def bearer(key: str) -> bytes:
    return f"Bearer {key}".encode()


async def ask(core: Core, key: str):  # type: ignore[no-untyped-def]
    return await core.auth.authenticate(bearer(key), None, INFERENCE_SCOPE)


# ------------------------------------------------------------------ settings


def test_limiter_settings_are_validated_and_the_password_never_shown(tmp_path: Path) -> None:
    base = {"AGENTROUTER_DATA_DIR": str(tmp_path)}
    s = load_settings(env={**base, "AGENTROUTER_LIMITER_URL": "redis://app:s3cret@10.0.0.5:6379/2"})
    assert s.limiter_url == "redis://app:s3cret@10.0.0.5:6379/2"
    assert s.limiter_failure_mode == "local" and s.limiter_timeout == 0.25
    assert "s3cret" not in repr(s) and "redis://app:***@10.0.0.5:6379/2" in repr(s)
    assert load_settings(env=base).limiter_url is None
    assert load_settings(env={**base, "AGENTROUTER_LIMITER_URL": ""}).limiter_url is None
    for url in ("rediss://:pw@h:6380/0", "unix:///run/redis.sock?db=1&password=pw"):
        assert load_settings(env={**base, "AGENTROUTER_LIMITER_URL": url}).limiter_url == url
    with pytest.raises(ConfigError) as exc:
        load_settings(env={**base, "AGENTROUTER_LIMITER_URL": "http://app:s3cret@h/0"})
    assert "server.limiter_url" in str(exc.value) and "AGENTROUTER_LIMITER_URL" in str(exc.value)
    assert "s3cret" not in str(exc.value)
    with pytest.raises(ConfigError, match="limiter_failure_mode"):
        load_settings(env={**base, "AGENTROUTER_LIMITER_FAILURE_MODE": "fallback"})
    for bad in ("0", "-1", "6", "nan"):
        with pytest.raises(ConfigError, match="limiter_timeout"):
            load_settings(env={**base, "AGENTROUTER_LIMITER_TIMEOUT": bad})
    path = tmp_path / "c.toml"
    path.write_text('[server]\nlimiter_url = "redis://127.0.0.1:1/0"\nlimiter_failure_mode = "closed"\n')
    s = load_settings(path, env=base)
    assert (s.limiter_url, s.limiter_failure_mode) == ("redis://127.0.0.1:1/0", "closed")
    assert redact_url("redis://pw@h/0") == "redis://***@h/0"
    assert redact_url("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=***&db=1"


async def test_without_limiter_url_the_core_is_shared_memory_only(core: Core) -> None:
    assert isinstance(core.limits, SharedMemoryLimiter) and core.remote is None
    assert core.limiter_state() is None


# ------------------------------------------------------------------ the request path


async def test_decisions_are_made_in_redis_in_one_call(rcore: Core, raw: aioredis.Redis) -> None:
    assert isinstance(rcore.limits, FailoverLimiter) and rcore.limiter_state() == "redis"
    created = await rcore.keys.create(requests=3, interval=60)
    key, row = created.key, created.row
    assert int(await raw.get("ar:generation")) == 1, "the creation was announced"
    assert await raw.exists(f"{{ar:key:{row.id}}}:bucket") == 0
    remaining = []
    for _ in range(4):
        result = await ask(rcore, key)
        assert result.decision is not None
        remaining.append(result.decision.remaining)
    assert remaining == [2, 1, 0, 0]
    assert result.refusal is Refusal.RATE_LIMITED
    assert result.decision.retry_after is not None and 19 < result.decision.retry_after <= 20
    assert await raw.exists(f"{{ar:key:{row.id}}}:bucket") == 1
    assert row.slot is not None
    local = rcore.limiter.acquire_slot(row.slot, 3, 60.0)
    assert local.remaining == 2, "this host's region was not charged: Redis decided"


async def test_a_deletion_sets_the_flag_in_redis_and_bumps_the_generation(rcore: Core, raw: aioredis.Redis) -> None:
    created = await rcore.keys.create()
    await rcore.keys.delete(created.row.id)
    assert await raw.exists(f"{{ar:key:{created.row.id}}}:revoked") == 1
    assert int(await raw.get("ar:generation")) == 2
    await rcore.keys.update((await rcore.keys.create()).row.id, name="renamed")
    assert int(await raw.get("ar:generation")) == 4


async def test_a_revocation_made_through_redis_alone_is_refused_on_the_next_request(
    rcore: Core, raw: aioredis.Redis
) -> None:
    created = await rcore.keys.create()
    assert (await ask(rcore, created.key)).refusal is None
    # Another host revoked it: only Redis knows (no announcement, no generation move).
    await raw.set(f"{{ar:key:{created.row.id}}}:revoked", b"1")
    result = await ask(rcore, created.key)
    assert result.refusal is Refusal.DELETED and "has been deleted" in result.message


async def other_host_store(data_dir: Path) -> Store:
    return await SqliteStore.open(data_dir / "agentrouter.db")


async def test_an_expiry_set_on_another_host_is_in_force_on_the_next_request_without_any_message(
    rcore: Core, raw: aioredis.Redis, data_dir: Path
) -> None:
    created = await rcore.keys.create()
    assert (await ask(rcore, created.key)).refusal is None
    store = await other_host_store(data_dir)
    try:
        await store.update_key(created.row.id, {"expires_at": time.time() - 1})
    finally:
        await store.close()
    assert (await ask(rcore, created.key)).refusal is None, "nothing told this host yet"
    await raw.incr("ar:generation")  # the bump, its announcement lost
    reloads = rcore.auth.reloads
    result = await ask(rcore, created.key)
    assert result.refusal is Refusal.EXPIRED, result.message
    assert rcore.auth.reloads == reloads + 1


async def test_a_key_created_on_another_host_works_at_once_and_random_keys_cause_no_reloads(
    rcore: Core, raw: aioredis.Redis, data_dir: Path
) -> None:
    await rcore.keys.create()  # slot 0 here
    fresh = generate_key()
    store = await other_host_store(data_dir)
    try:
        row = await store.insert_key(
            id="key_" + secrets.token_hex(8),
            name="made elsewhere",
            prefix=display_prefix(fresh),
            digest=rcore.digester.digest(fresh),
            tag=secrets.randbits(63) | 1,
            requests=5,
            interval=60.0,
            metadata={},
            scope="inference",
            owner=None,
            created_at=time.time(),
            expires_at=None,
            slot_capacity=rcore.limiter.capacity,
            claim=lambda slot: None,  # the other host's region, not this one
        )
    finally:
        await store.close()
    assert row.slot is not None and not rcore.limiter.slot_is_live(row.slot, row.tag)
    await raw.incr("ar:generation")  # no announcement reached this host
    result = await ask(rcore, fresh)
    assert result.refusal is None and result.record is not None and result.record.id == row.id
    assert result.decision is not None and result.decision.remaining == 4

    reloads = rcore.auth.reloads
    for _ in range(50):
        result = await ask(rcore, generate_key())
        assert result.refusal is Refusal.UNKNOWN
    assert rcore.auth.reloads == reloads, "unknown keys with an unchanged generation reload nothing"


async def test_an_announced_change_reloads_an_idle_process(rcore: Core, redis_url: str, data_dir: Path) -> None:
    rcore.follow_changes()
    reloads = rcore.auth.reloads
    other = await open_redis_core(data_dir.parent / "other", redis_url)
    try:
        await other.limits.changed()
    finally:
        await other.close()
    await until(lambda: rcore.auth.reloads > reloads, "a reload after the announcement", within=2.0)


# ------------------------------------------------------------------ Redis down


async def test_redis_down_at_start_is_not_an_error_and_each_mode_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = f"redis://agentrouter:pa55word@127.0.0.1:{free_port()}/0"
    for mode in FailureMode:
        data_dir = tmp_path / mode.value
        core = await open_redis_core(data_dir, url, mode.value)
        try:
            created = await core.keys.create(requests=2, interval=60)
            await core.auth.reload()
            assert core.limiter_state() == f"redis unavailable: {mode.value}"
            started = time.monotonic()
            result = await ask(core, created.key)
            assert time.monotonic() - started < 0.25 + 0.3
            if mode is FailureMode.LOCAL:
                assert result.refusal is None and result.decision is not None
                assert result.decision.remaining == 1, "this host's region decided"
            elif mode is FailureMode.OPEN:
                assert result.refusal is None and result.decision is not None
                assert result.decision.limit is None
            else:
                assert result.refusal is Refusal.UNAVAILABLE and result.refusal.status == 503
                assert result.record is not None  # counted for the key
            problems = await core.problems()
            closed = [p for p in problems if p.startswith("limiter:")]
            assert bool(closed) == (mode is FailureMode.CLOSED), problems
        finally:
            await core.close()
    text = caplog.text
    assert "pa55word" not in text
    assert "redis://agentrouter:***@127.0.0.1" in text


async def test_changes_made_while_redis_is_down_are_sent_when_it_returns(
    redis_servers: RedisServers, data_dir: Path
) -> None:
    server: RedisServer = redis_servers.start()
    core = await open_redis_core(data_dir, server.url)
    try:
        created = await core.keys.create()
        await core.auth.reload()
        server.kill()
        await core.keys.delete(created.row.id)  # saved in the store; Redis cannot be told
        assert isinstance(core.limits, FailoverLimiter) and core.limits.pending == 2
        result = await ask(core, created.key)
        assert result.refusal is Refusal.DELETED  # this host knows at once
        core.follow_changes()
        server.start()  # empty: the flag must be sent again

        async def sent() -> bool:
            client = aioredis.Redis.from_url(server.url)
            try:
                return bool(await client.exists(f"{{ar:key:{created.row.id}}}:revoked"))
            finally:
                await client.aclose()

        await until_async(sent, "the kept revocation sent to the restarted Redis", within=5.0)
        assert core.limits.pending == 0
        assert core.limiter_state() == "redis"
    finally:
        await core.close()


async def test_revocations_reach_an_outage_host_from_the_store(redis_servers: RedisServers, data_dir: Path) -> None:
    """While Redis is down, a host reloads its key table from the store about once a
    second: a deletion made elsewhere (in the store) is refused within that."""
    server = redis_servers.start()
    core = await open_redis_core(data_dir, server.url)
    try:
        created = await core.keys.create()
        await core.auth.reload()
        core.follow_changes()
        server.kill()
        assert (await ask(core, created.key)).refusal is None  # local mode
        store = await other_host_store(data_dir)
        try:
            await store.delete_key(created.row.id, now=time.time(), revoke=lambda slot, tag: None)
        finally:
            await store.close()
        deleted_at = time.monotonic()

        async def refused() -> bool:
            return (await ask(core, created.key)).refusal is Refusal.DELETED

        await until_async(refused, "the deletion read from the store", within=3.0)
        assert time.monotonic() - deleted_at < 2.0
    finally:
        await core.close()
