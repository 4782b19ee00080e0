"""One acquire through the Redis limiter (a loopback round trip to a private
redis-server, the Function, and the decision built in Python) beside the native
shared-memory acquire, in the same run and group.

    .venv/bin/python -m pytest benches/bench_limits_redis.py --benchmark-enable

Both go through the ``Limiter`` interface as the gateway will call them. The async
calls are driven by ``loop.run_until_complete``; ``loop-only`` measures that driver
around a coroutine that does nothing, and ``redis-ping`` a bare PING on the same
client: the Redis acquire's own cost is above those two floors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agentrouter._core import KeyRecord, RateLimiter
from agentrouter.limits import SharedMemoryLimiter
from agentrouter.limits.redis import RedisLimiter
from tests.services import RedisServer

# Never refuses during a run, so every call takes the admitting (writing) path.
REQUESTS, INTERVAL = 1_000_000_000, 1.0
KEY = KeyRecord("key_bench000000000000", 0, 1, REQUESTS, INTERVAL, None, "inference")


def bench(group: str) -> pytest.MarkDecorator:
    return pytest.mark.benchmark(group=group, min_time=0.0005, warmup=True)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def redis_limiter(tmp_path_factory: pytest.TempPathFactory, loop: asyncio.AbstractEventLoop) -> Iterator[RedisLimiter]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        limiter = loop.run_until_complete(RedisLimiter.connect(server.url, timeout=1.0))
        yield limiter
        loop.run_until_complete(limiter.aclose())
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared() -> SharedMemoryLimiter:
    native = RateLimiter(capacity=16)
    native.claim_slot(KEY.slot, KEY.tag)
    return SharedMemoryLimiter(native)


@bench("limits-acquire")
def test_native_acquire(benchmark: Any, shared: SharedMemoryLimiter, loop: asyncio.AbstractEventLoop) -> None:
    verdict = benchmark(lambda: loop.run_until_complete(shared.acquire(KEY, REQUESTS, INTERVAL)))
    assert verdict.decision.allowed


@bench("limits-acquire")
def test_redis_acquire(benchmark: Any, redis_limiter: RedisLimiter, loop: asyncio.AbstractEventLoop) -> None:
    verdict = benchmark(lambda: loop.run_until_complete(redis_limiter.acquire(KEY, REQUESTS, INTERVAL)))
    assert verdict.decision.allowed and verdict.degraded is None


@bench("limits-acquire")
def test_loop_only(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    async def nothing() -> None:
        return None

    benchmark(lambda: loop.run_until_complete(nothing()))


@bench("limits-acquire")
def test_redis_ping(benchmark: Any, redis_limiter: RedisLimiter, loop: asyncio.AbstractEventLoop) -> None:
    assert benchmark(lambda: loop.run_until_complete(redis_limiter.client.ping()))
