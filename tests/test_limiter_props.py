"""Property tests of the limiter on a fake clock against an exact token bucket
kept in ``fractions.Fraction``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from agentrouter.limiter import FakeClock, RateLimiter

NS = 1_000_000_000
UNIX0_NS = 1_700_000_000 * NS
MONO0_NS = 1 * NS  # FakeClock defaults


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


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_limiter_matches_the_token_bucket_and_never_exceeds_any_window(
    scenario: tuple[int, int, list[tuple[int, int]]],
) -> None:
    requests, interval_ms, steps = scenario
    interval_ns = interval_ms * 1_000_000
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, capacity=4)
    bucket = TokenBucket(requests, interval_ns)
    exact = is_exact(requests, interval_ns)
    admitted: list[tuple[int, int]] = []
    for gap, cost in steps:
        clock.advance_ns(gap)
        d = limiter.acquire("p", requests=requests, interval=interval_ms / 1000, cost=cost)
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
