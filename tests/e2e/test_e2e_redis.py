"""The Redis limiter through a real ``agentrouter serve --workers 2`` pointed at a
private redis-server (``limiter_url``): limits exact across the workers and decided
in Redis, key changes arriving only through Redis refused on every worker's next
request, and Redis killed with SIGKILL under load: no 500, no request held past
the timeout, the configured failure mode, exact again within 5 s of the restart,
and the usage adding up.

"Another host" is simulated by what another host does to the shared state: it
writes the store (the same SQLite file, through ``Store``, never this host's
limiter region) and Redis (the revoked flag; the generation, without the pub/sub
announcement). Two ``serve`` instances on separate data directories need a shared
store (PostgreSQL); that test belongs with it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agentrouter._core import Digester, display_prefix, generate_key
from agentrouter.config import load_settings
from agentrouter.core import Core
from agentrouter.store import open_store
from tests.e2e.conftest import BIG_LIMIT, Gateway, async_client, write_config
from tests.services import RedisServer, RedisServers
from tests.upstream_fake import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]
TIMEOUT = 0.25  # limiter_timeout, the default
SLACK = 1.0  # a request's own time through the gateway and the fake on a busy two-core machine

pytestmark = pytest.mark.slow


def redis_gateway(tmp: Path, fake: FakeUpstream, down_url: str, url: str, mode: str = "local") -> Gateway:
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp / "agentrouter.toml", fake.base_url, down_url, raw_url=fake.raw_base_url)
    gw = Gateway(data_dir, config, workers=2)
    gw.env["AGENTROUTER_LIMITER_URL"] = url
    gw.env["AGENTROUTER_LIMITER_FAILURE_MODE"] = mode
    gw.env["AGENTROUTER_SECRET"] = "e2e-redis-secret-0123456789abcdef0123456789"
    return gw.start()


@pytest.fixture(scope="module")
def rserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rgw(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream, down_url: str, rserver: RedisServer
) -> Iterator[Gateway]:
    gw = redis_gateway(tmp_path_factory.mktemp("redis-gateway"), fake, down_url, rserver.url)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def rdb(rserver: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(rserver.url)
    try:
        yield client
    finally:
        client.close()


async def post(client: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    return await client.post(
        url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
    )


async def fire(url: str, key: str, n: int) -> list[httpx.Response]:
    """``n`` requests at once, each on a connection of its own (both workers take some)."""

    async def one() -> httpx.Response:
        async with async_client() as client:
            return await post(client, url, key)

    return list(await asyncio.gather(*(one() for _ in range(n))))


def worker_of(response: httpx.Response) -> str:
    """The worker that answered: request ids start with a per-worker prefix."""
    return response.headers["x-request-id"][:16]


def bucket_seconds_ahead(rdb: redis.Redis, key_id: str) -> float:
    """How far the key's bucket TAT in Redis is ahead of Redis's clock (0: no bucket)."""
    state = rdb.hmget(f"{{ar:key:{key_id}}}:bucket", "s")
    if state[0] is None:
        return 0.0
    now_s, now_us = rdb.time()
    return int(state[0]) - (now_s + now_us / 1e6)


async def test_limits_are_exact_across_workers_and_decided_in_redis(rgw: Gateway, rdb: redis.Redis) -> None:
    created = rgw.create_key(name="exact-redis", limit=("20", "3600"))
    answers = await fire(rgw.url, created["key"], 50)
    assert sorted(a.status_code for a in answers) == [200] * 20 + [429] * 30
    remaining = sorted(int(a.headers["x-ratelimit-remaining"]) for a in answers if a.status_code == 200)
    assert remaining == list(range(20))
    assert len({worker_of(a) for a in answers}) == 2, "both workers answered"
    # The whole burst is in the Redis bucket: 20 admissions of 180 s each.
    assert 3600 - 5 < bucket_seconds_ahead(rdb, created["id"]) <= 3600
    async with async_client() as client:
        ready = await client.get(rgw.url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "limiter": "redis"})
    usage = rgw.wait_usage(created["id"], 50)
    assert (usage["requests"], usage["successes"], usage["failures_4xx"]) == (50, 20, 30)


async def test_a_revocation_arriving_only_through_redis_is_refused_by_every_worker(
    rgw: Gateway, rdb: redis.Redis
) -> None:
    created = rgw.create_key(name="revoked-elsewhere")
    assert {a.status_code for a in await fire(rgw.url, created["key"], 6)} == {200}
    rdb.set(f"{{ar:key:{created['id']}}}:revoked", b"1")  # another host's deletion, as Redis sees it
    answers = await fire(rgw.url, created["key"], 12)
    assert {a.status_code for a in answers} == {401}
    assert all("has been deleted" in a.json()["error"]["message"] for a in answers)


async def test_a_cli_deletion_is_in_redis_and_refused_at_once(rgw: Gateway, rdb: redis.Redis) -> None:
    created = rgw.create_key(name="deleted-here")
    assert {a.status_code for a in await fire(rgw.url, created["key"], 4)} == {200}
    before = int(rdb.get("ar:generation") or 0)
    rgw.cli("keys", "delete", created["id"], "--yes")
    assert rdb.exists(f"{{ar:key:{created['id']}}}:revoked") == 1
    assert int(rdb.get("ar:generation") or 0) == before + 1
    assert {a.status_code for a in await fire(rgw.url, created["key"], 8)} == {401}


async def test_expiry_and_new_keys_from_another_host_are_in_force_on_the_next_request(
    rgw: Gateway, rdb: redis.Redis
) -> None:
    created = rgw.create_key(name="expired-elsewhere")
    assert {a.status_code for a in await fire(rgw.url, created["key"], 6)} == {200}
    digester_key = generate_key()
    store = await open_store(load_settings(rgw.config, env=rgw.env))  # as another host opens it
    try:
        await store.update_key(created["id"], {"expires_at": time.time() - 1})
        secret = rgw.env["AGENTROUTER_SECRET"].encode()
        row = await store.insert_key(
            id="key_" + secrets.token_hex(8),
            name="made elsewhere",
            prefix=display_prefix(digester_key),
            digest=Digester(secret).digest(digester_key),
            tag=secrets.randbits(63) | 1,
            requests=7,
            interval=3600.0,
            metadata={},
            scope="inference",
            owner=None,
            created_at=time.time(),
            expires_at=None,
            slot_capacity=65536,
            claim=lambda slot: None,  # another host's region
        )
    finally:
        await store.close()
    rdb.incr("ar:generation")  # the other host's bump; its announcement lost (no PUBLISH)
    expired = await fire(rgw.url, created["key"], 12)
    assert {a.status_code for a in expired} == {401}, [a.text for a in expired]
    assert all("has expired" in a.json()["error"]["message"] for a in expired)
    fresh = await fire(rgw.url, digester_key, 10)
    assert sorted(a.status_code for a in fresh) == [200] * 7 + [429] * 3
    assert 3600 - 5 < bucket_seconds_ahead(rdb, row.id) <= 3600  # 7 of 7, in Redis


# ------------------------------------------------------------------ Redis killed under load


class Load:
    """Requests on ``connections`` keep-alive connections until stopped; every answer
    kept with when it was sent and how long it took."""

    def __init__(self, url: str, key: str, connections: int = 6) -> None:
        self.url = url
        self.key = key
        self.connections = connections
        self.answers: list[tuple[float, float, int, dict[str, str], str]] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self) -> None:
        async with async_client(timeout=10.0) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    resp = await post(client, self.url, self.key)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                took = time.monotonic() - sent
                self.answers.append((sent, took, resp.status_code, dict(resp.headers), resp.text))
                await asyncio.sleep(0.005)  # about 100 requests a second per connection at most

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._run()) for _ in range(self.connections)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def between(self, start: float, end: float) -> list[tuple[float, float, int, dict[str, str], str]]:
        return [a for a in self.answers if start <= a[0] < end]


async def wait_for(predicate: Any, within: float, pause: float = 0.05) -> float:
    """Seconds until ``predicate()`` (a coroutine function) holds; fails after ``within``."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(pause)
    return time.monotonic() - started


async def make_keys(gw: Gateway, n: int, **options: Any) -> list[dict[str, str]]:
    """``n`` keys made through the key service of a core on the gateway's settings (the
    CLI's way, without a process per key)."""
    core = await Core.from_settings(load_settings(gw.config, env=gw.env))
    try:
        made = [await core.keys.create(**options) for _ in range(n)]
    finally:
        await core.close()
    return [{"id": c.row.id, "key": c.key} for c in made]


@pytest.mark.parametrize(("how", "mode"), [("kill", "local"), ("kill", "open"), ("kill", "closed"), ("pause", "local")])
async def test_redis_killed_under_load_then_restarted(
    tmp_path: Path, fake: FakeUpstream, down_url: str, redis_servers: RedisServers, how: str, mode: str
) -> None:
    """``kill``: SIGKILL, then started again empty. ``pause``: SIGSTOP (every call
    hangs until the timeout), then SIGCONT."""
    server = redis_servers.start()
    gw = redis_gateway(tmp_path, fake, down_url, server.url, mode)
    try:
        load_key = gw.create_key(name="load", limit=BIG_LIMIT)
        probes = await make_keys(gw, 16, requests=4, interval=3600)
        load = Load(gw.url, load_key["key"])
        load.start()
        await wait_for(lambda: _at_least(load, 30), 10)
        killed = time.monotonic()
        server.kill() if how == "kill" else server.pause()
        noticed = killed + TIMEOUT + 0.5  # every worker is in the failure mode by then
        await wait_for(lambda: _at_least_since(load, noticed, 60), 10)
        down_answers = load.between(noticed, time.monotonic())
        # kill: the same port, empty (no buckets, no generation, no library).
        server.start() if how == "kill" else server.resume()
        restarted = time.monotonic()
        client = redis.Redis.from_url(server.url)
        try:
            # Exact again: a burst on a fresh key is exactly its limit, and all of it in Redis.
            async def exact() -> bool:
                probe = probes.pop(0)
                answers = await fire(gw.url, probe["key"], 10)
                statuses = sorted(a.status_code for a in answers)
                return statuses == [200] * 4 + [429] * 6 and bucket_seconds_ahead(client, probe["id"]) > 3600 - 5

            back = await wait_for(exact, 5.0, pause=0.25)
        finally:
            client.close()
        await load.stop()
        stopped = time.monotonic()
    finally:
        gw_log = gw.log_tail(200)
        gw.stop()

    assert back < 5.0, f"exact again {back:.1f} s after Redis restarted"
    assert not load.errors, load.errors[:5]
    statuses = {a[2] for a in load.answers}
    assert 500 not in statuses and not any(s >= 500 and s != 503 for s in statuses), statuses
    slowest = max(a[1] for a in load.answers)
    assert slowest < TIMEOUT + SLACK, f"a request took {slowest:.2f} s"
    assert down_answers, "no requests during the outage"
    for _sent, _took, status, headers, text in down_answers:
        if mode == "local":
            assert status == 200 and "x-ratelimit-remaining" in headers, (status, text)
        elif mode == "open":
            assert status == 200 and "x-ratelimit-limit" not in headers, (status, headers)
        else:
            assert status == 503 and headers.get("retry-after") == "1", (status, text)
            assert "rate limiter cannot be reached" in text
    # Logged once per worker when it went, once when it came back: no flapping.
    assert gw_log.count("is unavailable") == 2, gw_log
    assert gw_log.count("answers again after") == 2, gw_log
    # Usage adds up: every answer the load got is counted for the key.
    usage = gw.wait_usage(load_key["id"], len(load.answers))
    assert usage["requests"] == len(load.answers), (usage, len(load.answers))
    assert stopped > restarted


async def _at_least(load: Load, n: int) -> bool:
    return len(load.answers) >= n


async def _at_least_since(load: Load, since: float, n: int) -> bool:
    return len(load.between(since, time.monotonic())) >= n
