"""Redis down: a real redis-server killed with SIGKILL (or stopped with SIGSTOP) under
a bounded request loop, then started again. No exception reaches the caller, no call
waits longer than the timeout, the configured failure mode decides meanwhile, and
decisions are exact again within 5 s of Redis answering. Also the shared-memory
adapter, which is the ``local`` mode's limiter."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from agentrouter._core import KeyRecord
from agentrouter.limiter import FakeClock, RateLimiter
from agentrouter.limits import UNLIMITED, FailureMode, KeyRef, LimiterUnavailable, SharedMemoryLimiter, Verdict
from agentrouter.limits.failover import FailoverLimiter
from agentrouter.limits.redis import RedisLimiter
from tests.services import RedisServer, RedisServers

TIMEOUT = 0.1
SLACK = 0.15  # event-loop and scheduling noise on a busy two-core machine
RETRY = 0.2
R, INTERVAL = 1_000, 3600.0  # a limit no loop here exhausts: every exact decision is an admission
KEY = KeyRecord("key_00000000000000aa", 3, 77, R, INTERVAL, None, "inference")


def fields(d: object) -> tuple[object, ...]:
    return tuple(getattr(d, f) for f in ("allowed", "limit", "remaining", "reset", "retry_after", "reason"))


@pytest.fixture
def server(redis_servers: RedisServers) -> RedisServer:
    return redis_servers.start()


@pytest.fixture
def local() -> SharedMemoryLimiter:
    native = RateLimiter(capacity=16)
    native.claim_slot(KEY.slot, KEY.tag)
    return SharedMemoryLimiter(native)


@pytest.fixture
async def remote(server: RedisServer) -> AsyncIterator[RedisLimiter]:
    limiter = await RedisLimiter.connect(server.url, timeout=TIMEOUT)
    try:
        yield limiter
    finally:
        await limiter.aclose()


async def timed(limiter: FailoverLimiter) -> tuple[float, object]:
    started = time.monotonic()
    verdict = await limiter.acquire(KEY, R, INTERVAL)
    return time.monotonic() - started, verdict


@pytest.mark.parametrize("mode", list(FailureMode))
async def test_kill_9_and_restart_under_load(
    server: RedisServer,
    remote: RedisLimiter,
    local: SharedMemoryLimiter,
    mode: FailureMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentrouter.limits")
    limiter = FailoverLimiter(remote, local, mode, retry_interval=RETRY)
    for n in range(5):
        verdict = await limiter.acquire(KEY, R, INTERVAL)
        assert verdict.degraded is None and verdict.generation == 0
        assert verdict.decision is not None and verdict.decision.remaining == R - 1 - n
    assert local.native.acquire_slot(KEY.slot, R, INTERVAL).remaining == R - 1, "Redis decided, not the local limiter"

    server.kill()
    local_remaining = R - 1
    for _ in range(40):  # spans several retry intervals: the probes fail too
        elapsed, verdict = await timed(limiter)
        assert elapsed < TIMEOUT + SLACK
        assert verdict.degraded is mode and verdict.generation is None  # type: ignore[attr-defined]
        decision = verdict.decision  # type: ignore[attr-defined]
        if mode is FailureMode.LOCAL:
            local_remaining -= 1
            assert decision.allowed and decision.remaining == local_remaining
        elif mode is FailureMode.OPEN:
            assert decision is UNLIMITED
        else:
            assert decision is None and not verdict.revoked  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)  # paces the loop (about 100 requests a second)
    assert limiter.outages == 1 and not limiter.available
    assert limiter.degraded_decisions == 40

    server.start()  # same port, empty (no persistence): the library is gone too
    restarted = time.monotonic()
    async with asyncio.timeout(5):
        while True:
            elapsed, verdict = await timed(limiter)
            assert elapsed < TIMEOUT + SLACK
            if verdict.degraded is None:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
    assert time.monotonic() - restarted < 5
    assert limiter.available and limiter.outages == 1
    # Exact again, on the restarted server's (empty) bucket.
    assert verdict.decision.remaining == R - 1  # type: ignore[attr-defined]
    assert (await limiter.acquire(KEY, R, INTERVAL)).decision.remaining == R - 2  # type: ignore[union-attr]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # once when it went, once when it came back
    assert "unavailable" in messages[0] and repr(mode.value) in messages[0]
    assert "answers again" in messages[1]


async def test_a_hung_server_costs_a_request_at_most_the_timeout(
    server: RedisServer, remote: RedisLimiter, local: SharedMemoryLimiter
) -> None:
    limiter = FailoverLimiter(remote, local, FailureMode.CLOSED, retry_interval=RETRY)
    assert (await limiter.acquire(KEY, R, INTERVAL)).degraded is None
    server.pause()
    try:
        slow = 0
        for _ in range(30):
            elapsed, verdict = await timed(limiter)
            assert elapsed < TIMEOUT + SLACK
            assert verdict.degraded is FailureMode.CLOSED  # type: ignore[attr-defined]
            slow += elapsed >= TIMEOUT / 2
            await asyncio.sleep(0.01)
        # Only the first call and one probe per retry interval waited on the server.
        assert 1 <= slow <= 1 + (30 * (0.01 + TIMEOUT)) / RETRY
    finally:
        server.resume()
    async with asyncio.timeout(5):
        while (await limiter.acquire(KEY, R, INTERVAL)).degraded is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # paces the requests
    assert limiter.available


class CountingRedisLimiter(RedisLimiter):
    calls = 0

    async def acquire(self, key: KeyRef, requests: int | None, interval: float, cost: int = 1) -> Verdict:
        self.calls += 1
        return await super().acquire(key, requests, interval, cost)


async def test_concurrent_requests_during_an_outage_send_one_probe(
    server: RedisServer, local: SharedMemoryLimiter
) -> None:
    remote = await CountingRedisLimiter.connect(server.url, timeout=TIMEOUT)
    now = [0.0]
    limiter = FailoverLimiter(remote, local, FailureMode.OPEN, retry_interval=RETRY, clock=lambda: now[0])
    server.pause()
    try:
        await limiter.acquire(KEY, R, INTERVAL)  # the call that finds the outage
        assert remote.calls == 1
        verdicts = await asyncio.gather(*(limiter.acquire(KEY, R, INTERVAL) for _ in range(50)))
        assert remote.calls == 1, "within the retry interval nobody waits on Redis"
        now[0] += RETRY
        verdicts += await asyncio.gather(*(limiter.acquire(KEY, R, INTERVAL) for _ in range(50)))
        assert remote.calls == 2, "then one request probes, whatever the concurrency"
        assert all(v.degraded is FailureMode.OPEN for v in verdicts)
        assert limiter.outages == 1
    finally:
        server.resume()
        await remote.aclose()


async def test_key_changes_reach_the_local_limiter_and_fail_loudly_during_an_outage(
    server: RedisServer, remote: RedisLimiter, local: SharedMemoryLimiter
) -> None:
    limiter = FailoverLimiter(remote, local)
    await limiter.revoke(KEY)
    assert await remote.is_revoked(KEY) and await local.is_revoked(KEY)
    assert (await limiter.acquire(KEY, R, INTERVAL)).revoked
    await limiter.claim(KEY)
    assert not await limiter.is_revoked(KEY)
    assert await limiter.bump_generation() == 1 and await limiter.generation() == 1
    assert local.native.generation() == 1
    server.kill()
    for change in (limiter.revoke(KEY), limiter.bump_generation(), limiter.generation(), limiter.is_revoked(KEY)):
        with pytest.raises(LimiterUnavailable):
            await change
    assert await local.is_revoked(KEY), "applied here even though the other hosts cannot be told"
    verdict = await limiter.acquire(KEY, R, INTERVAL)
    assert verdict.degraded is FailureMode.LOCAL and verdict.revoked and verdict.decision is None


# -- the shared-memory adapter -----------------------------------------------------------


async def test_the_shared_memory_adapter_is_the_native_limiter() -> None:
    clock = FakeClock()
    native, reference = RateLimiter(capacity=8, clock=clock), RateLimiter(capacity=8, clock=clock)
    for n in (native, reference):
        n.claim_slot(KEY.slot, KEY.tag)
    adapter = SharedMemoryLimiter(native)
    for cost in (1, 2, 3, 4, 11, 1):
        verdict = await adapter.acquire(KEY, 10, 10.0, cost)
        assert (verdict.revoked, verdict.generation, verdict.degraded) == (False, 0, None)
        assert fields(verdict.decision) == fields(reference.acquire_slot(KEY.slot, 10, 10.0, cost))
        clock.advance(0.3)
    assert fields((await adapter.acquire(KEY, None, 10.0)).decision) == fields(UNLIMITED)
    await adapter.revoke(KEY)
    assert await adapter.is_revoked(KEY)
    assert await adapter.acquire(KEY, 10, 10.0) == (None, True, 0, None)
    await adapter.claim(KEY)
    assert (await adapter.acquire(KEY, 10, 10.0)).decision.remaining == 9  # type: ignore[union-attr]
    assert await adapter.bump_generation() == 1 and await adapter.generation() == 1
    with pytest.raises(ValueError):
        await adapter.acquire(KEY, 10, 10.0, 0)


async def test_change_announcements_survive_a_restart(server: RedisServer, remote: RedisLimiter) -> None:
    changes = remote.changes(poll_interval=0.1)
    try:
        async with asyncio.timeout(5):
            assert await anext(changes) == 0
            await remote.bump_generation()
            assert await anext(changes) == 1
        server.kill()
        server.start()  # empty: the generation is 0 again, which is a change
        async with asyncio.timeout(5):
            assert await anext(changes) == 0
        other = await RedisLimiter.connect(server.url, timeout=TIMEOUT)
        try:
            await other.bump_generation()
            async with asyncio.timeout(5):
                assert await anext(changes) == 1
        finally:
            await other.aclose()
    finally:
        await changes.aclose()


async def test_local_mode_refuses_a_key_this_host_cannot_limit(server: RedisServer, remote: RedisLimiter) -> None:
    small = SharedMemoryLimiter(RateLimiter(capacity=2))  # KEY's slot 3 is outside it
    limiter = FailoverLimiter(remote, small, FailureMode.LOCAL)
    server.kill()
    verdict = await limiter.acquire(KEY, R, INTERVAL)
    assert (verdict.decision, verdict.degraded) == (None, FailureMode.CLOSED)
