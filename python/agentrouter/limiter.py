"""Exact rate limiting, usable on its own (it imports nothing of the gateway).

R requests per I seconds, capacity R, refilled continuously at R/I per second
(GCRA: one atomic theoretical-arrival-time word per bucket, updated lock-free).
``RateLimiter()`` keeps its buckets in this process; ``RateLimiter(path)`` maps a
file, and every process that opens the same path draws from the same buckets.

>>> from agentrouter.limiter import RateLimiter, FakeClock
>>> clock = FakeClock()
>>> limiter = RateLimiter(clock=clock)
>>> [limiter.acquire("user:42", requests=2, interval=1.0).allowed for _ in range(3)]
[True, True, False]
>>> d = limiter.acquire("user:42", requests=2, interval=1.0)
>>> d.reason, d.retry_after
('rate_limited', 0.5)
>>> clock.advance(0.5)
>>> limiter.acquire("user:42", requests=2, interval=1.0).allowed
True

A refusal is a :class:`Decision`, never an exception; ``LimiterError`` is raised
only when the shared region cannot be created, opened or used.

Decisions are exact (integer time) whenever ``R / gcd(R, I in ns)`` is at most
64, which covers round numbers of requests per whole seconds. Otherwise (e.g. a
prime R above 64) the emission interval is rounded up by a fraction of a
nanosecond: the limiter may refuse a hair early, and never admits more than R per
I. The burst is exactly R either way.
"""

from agentrouter._core import Decision, FakeClock, LimiterError, RateLimiter

__all__ = ["Decision", "FakeClock", "LimiterError", "RateLimiter"]
