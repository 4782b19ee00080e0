"""Property tests of the limiter on a fake clock against an exact token bucket
kept in ``fractions.Fraction``, for each implementation: the native shared-memory
limiter and the Redis limiter (deciding at the fake clock's time)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrouter.limiter import FakeClock
from tests.limiter_backends import BACKENDS, MONO0_NS, NS, UNIX0_NS, Acquire, backend
from tests.services import RedisServer


@dataclass
class Expected:
    allowed: bool
    remaining: int
    reset: int
    retry_after: Fraction | None
    reason: str | None


class TokenBucket:
    """Capacity R, refilled continuously at R/I per second, starts full."""

    def __init__(self, requests: int, interval_ns: int) -> None:
        self.r, self.i = requests, interval_ns
        self.tokens = Fraction(requests)
        self.last = MONO0_NS

    def step(self, now_ns: int, cost: int) -> Expected:
        self.tokens = min(Fraction(self.r), self.tokens + Fraction((now_ns - self.last) * self.r, self.i))
        self.last = now_ns
        allowed = cost <= self.tokens
        retry = None
        if allowed:
            self.tokens -= cost
        elif cost <= self.r:
            retry = (cost - self.tokens) * self.i / self.r / NS
        until_full_ns = (self.r - self.tokens) * self.i / self.r
        reset = math.ceil((UNIX0_NS + now_ns - MONO0_NS + until_full_ns) / NS)
        reason = None if allowed else "rate_limited" if cost <= self.r else "cost_exceeds_limit"
        return Expected(allowed, math.floor(self.tokens), reset, retry, reason)


def is_exact(requests: int, interval_ns: int) -> bool:
    """The limiter is exact when R / gcd(R, I_ns) <= 64 (see gcra.rs)."""
    return requests // math.gcd(requests, interval_ns) <= 64


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int]]]:
    requests = draw(st.integers(1, 200))
    interval_ms = draw(st.one_of(st.integers(1, 2_000), st.integers(1, 86_400_000)))
    interval_ns = interval_ms * 1_000_000
    gap = st.integers(0, 3 * interval_ns // requests + 1)
    cost = st.one_of(st.integers(1, min(3, requests)), st.integers(1, requests + 1))
    return requests, interval_ms, draw(st.lists(st.tuples(gap, cost), min_size=1, max_size=80))


@pytest.fixture(scope="module", params=BACKENDS)
def new_limiter(request: pytest.FixtureRequest) -> Iterator[Callable[[FakeClock], Acquire]]:
    def redis_url() -> str:
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url

    with backend(request.param, redis_url) as factory:
        yield factory


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_limiter_matches_the_token_bucket_and_never_exceeds_any_window(
    new_limiter: Callable[[FakeClock], Acquire],
    scenario: tuple[int, int, list[tuple[int, int]]],
) -> None:
    requests, interval_ms, steps = scenario
    interval_ns = interval_ms * 1_000_000
    clock = FakeClock()
    acquire = new_limiter(clock)
    bucket = TokenBucket(requests, interval_ns)
    exact = is_exact(requests, interval_ns)
    admitted: list[tuple[int, int]] = []
    for gap, cost in steps:
        clock.advance_ns(gap)
        d = acquire("p", requests=requests, interval=interval_ms / 1000, cost=cost)
        expected = bucket.step(clock.monotonic_ns, cost)
        assert d.limit == requests
        if d.allowed:
            admitted.append((clock.monotonic_ns, cost))
        if cost > requests:
            assert (d.allowed, d.reason, d.retry_after) == (False, "cost_exceeds_limit", None)
        if not exact:
            continue
        assert (d.allowed, d.reason) == (expected.allowed, expected.reason)
        assert (d.remaining, d.reset) == (expected.remaining, expected.reset)
        if expected.retry_after is None:
            assert d.retry_after is None
        else:
            assert d.retry_after is not None
            assert math.isclose(d.retry_after, float(expected.retry_after), rel_tol=1e-12, abs_tol=1e-15)
    # (a) in every window [a, b] between admissions: at most R + R·(b − a)/I cells.
    for a in range(len(admitted)):
        cells = 0
        for b in range(a, len(admitted)):
            cells += admitted[b][1]
            span = admitted[b][0] - admitted[a][0]
            assert cells * interval_ns <= requests * interval_ns + requests * span
