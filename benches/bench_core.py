"""Hot-path micro benchmarks of the native core, each beside a pure-Python
reference measured in the same run (same pytest-benchmark group).

    .venv/bin/python -m pytest benches --benchmark-enable

Targets: authenticate <= 2 us and acquire <= 0.5 us median from Python, and at
least 5x faster than the reference. "Contended" runs keep background threads
hammering the same bucket while measuring; under the GIL they interleave with the
measured thread, so this measures the cost of sharing, not parallel scaling
(parallel exactness is tested in tests/test_limiter_multiprocess.py).
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from hashlib import sha256
from typing import Any

import pytest

from agentrouter import _core as core
from agentrouter._core import Digester, KeyRecord, KeyTable, RateLimiter

SECRET = bytes(range(32))
TABLE_SIZE = 10_000
# Never refuses during a run, so every call takes the admitting (writing) path.
REQUESTS, INTERVAL = 1_000_000_000, 1.0


def bench(group: str) -> pytest.MarkDecorator:
    """Rounds of >= 100 us, so the timer's own cost is spread over hundreds of calls."""
    return pytest.mark.benchmark(group=group, min_time=0.0001, warmup=True)


class LockBucket:
    """The obvious pure-Python token bucket, returning the same fields as Decision."""

    def __init__(self, requests: int, interval: float) -> None:
        self.lock = threading.Lock()
        self.capacity, self.rate = requests, requests / interval
        self.tokens, self.last = float(requests), time.monotonic()

    def acquire(self, cost: int = 1) -> tuple[bool, int, int, int, float | None]:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            allowed = self.tokens >= cost
            if allowed:
                self.tokens -= cost
            retry_after = None if allowed else (cost - self.tokens) / self.rate
            reset = math.ceil(time.time() + (self.capacity - self.tokens) / self.rate)
            return allowed, self.capacity, int(self.tokens), reset, retry_after


@contextmanager
def hammering(call: Callable[[], Any], threads: int = 3) -> Iterator[None]:
    """Background threads calling ``call`` in bursts until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for _ in range(100):
                call()
            time.sleep(0)  # hand the GIL over between bursts

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        stop.set()
        for w in workers:
            w.join()


# -- authenticate ------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> list[str]:
    return [core.generate_key() for _ in range(TABLE_SIZE)]


@pytest.fixture(scope="module")
def table(keys: list[str]) -> KeyTable:
    digester = Digester(SECRET)
    limiter = RateLimiter(capacity=TABLE_SIZE)
    entries = []
    for slot, key in enumerate(keys):
        limiter.claim_slot(slot, slot + 1)
        entries.append((digester.digest(key), KeyRecord(f"k{slot}", slot, slot + 1, 100, 60.0, None, "all")))
    table = KeyTable(digester, limiter)
    table.replace_all(entries, limiter.generation())
    return table


@bench("authenticate")
def test_authenticate_core(benchmark: Any, table: KeyTable, keys: list[str]) -> None:
    key = keys[TABLE_SIZE // 2]
    status, _ = benchmark(table.authenticate, key)
    assert status == core.AUTH_OK


@bench("authenticate")
def test_authenticate_python_reference(benchmark: Any, keys: list[str]) -> None:
    digests = (hmac.new(SECRET, k.encode(), sha256).digest() for k in keys)
    by_digest = {d: (d, f"k{i}") for i, d in enumerate(digests)}

    def authenticate(raw: str) -> str | None:
        digest = hmac.new(SECRET, raw.encode(), sha256).digest()
        found = by_digest.get(digest)
        # Like the core, confirm the candidate with a constant-time comparison.
        return found[1] if found is not None and hmac.compare_digest(found[0], digest) else None

    assert benchmark(authenticate, keys[TABLE_SIZE // 2]) == f"k{TABLE_SIZE // 2}"


# -- acquire -------------------------------------------------------------------


@pytest.fixture
def limiter() -> RateLimiter:
    limiter = RateLimiter(capacity=64)
    limiter.claim_slot(0, 1)
    return limiter


def slot_call(limiter: RateLimiter) -> Callable[[], Any]:
    return lambda: limiter.acquire_slot(0, REQUESTS, INTERVAL)


def named_call(limiter: RateLimiter) -> Callable[[], Any]:
    return lambda: limiter.acquire("tenant:42", REQUESTS, INTERVAL)


@bench("acquire")
def test_acquire_slot_core(benchmark: Any, limiter: RateLimiter) -> None:
    assert benchmark(limiter.acquire_slot, 0, REQUESTS, INTERVAL).allowed


@bench("acquire")
def test_acquire_named_core(benchmark: Any, limiter: RateLimiter) -> None:
    assert benchmark(limiter.acquire, "tenant:42", REQUESTS, INTERVAL).allowed


@bench("acquire")
def test_acquire_python_reference(benchmark: Any) -> None:
    assert benchmark(LockBucket(REQUESTS, INTERVAL).acquire)[0]


@bench("acquire-contended")
def test_acquire_slot_core_contended(benchmark: Any, limiter: RateLimiter) -> None:
    with hammering(slot_call(limiter)):
        assert benchmark(slot_call(limiter)).allowed


@bench("acquire-contended")
def test_acquire_named_core_contended(benchmark: Any, limiter: RateLimiter) -> None:
    with hammering(named_call(limiter)):
        assert benchmark(named_call(limiter)).allowed


@bench("acquire-contended")
def test_acquire_python_reference_contended(benchmark: Any) -> None:
    bucket = LockBucket(REQUESTS, INTERVAL)
    with hammering(bucket.acquire):
        assert benchmark(bucket.acquire)[0]
