"""The limiter implementations side by side for tests that run the same assertions
against each: a synchronous ``acquire(name, requests, interval, cost)`` on a
``FakeClock``, native or Redis (deciding at the fake clock's time through the
test-only function; see ``limits/redis.py``)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from agentrouter.limiter import FakeClock, RateLimiter
from agentrouter.limits import Decision
from agentrouter.limits.redis import RedisLimiter, client_for

NS = 1_000_000_000
UNIX0_NS = 1_700_000_000 * NS
MONO0_NS = 1 * NS  # FakeClock defaults

BACKENDS = ["shared-memory", "redis"]


class Acquire(Protocol):
    def __call__(self, key: str, requests: int | None = ..., interval: float = ..., cost: int = ...) -> Decision: ...


def unix_ns(clock: FakeClock) -> int:
    """The fake clock's Unix time, exactly (``FakeClock.unix`` is a float)."""
    return UNIX0_NS + clock.monotonic_ns - MONO0_NS


class RedisBackend:
    """Redis limiters on one client and a private event loop; each ``limiter`` has
    buckets of its own (a fresh key prefix)."""

    _prefixes = itertools.count()

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = client_for(url, 5.0)

    def limiter(self, clock: FakeClock) -> RedisLimiter:
        return RedisLimiter(
            self.client, prefix=f"t{next(self._prefixes)}", timeout=5.0, test_clock=lambda: unix_ns(clock)
        )

    def acquire(self, clock: FakeClock) -> Acquire:
        limiter = self.limiter(clock)

        def acquire(key: str, requests: int | None = 100, interval: float = 60.0, cost: int = 1) -> Decision:
            return self.loop.run_until_complete(limiter.acquire_named(key, requests, interval, cost))

        return acquire

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@contextmanager
def backend(name: str, redis_url: Callable[[], str]) -> Iterator[Callable[[FakeClock], Acquire]]:
    """A factory of fresh limiters on a given fake clock for the backend ``name``."""
    if name == "shared-memory":
        yield lambda clock: RateLimiter(clock=clock, capacity=4).acquire
        return
    redis = RedisBackend(redis_url())
    try:
        yield redis.acquire
    finally:
        redis.close()
