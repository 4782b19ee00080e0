"""agentrouter.limiter: exact decisions on a fake clock, errors, the shared file,
and the gateway's slot API."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentrouter.limiter import Decision, FakeClock, LimiterError, RateLimiter

UNIX0 = 1_700_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock, capacity=64)


def fields(d: Decision) -> tuple[object, ...]:
    return (d.allowed, d.limit, d.remaining, d.reset, d.retry_after, d.reason)


def test_a_full_bucket_admits_exactly_r(limiter: RateLimiter) -> None:
    # 5 per 10 s: t = 2 s, so each admission moves `reset` 2 s later.
    got = [fields(limiter.acquire("k", requests=5, interval=10.0)) for _ in range(6)]
    assert got == [
        (True, 5, 4, UNIX0 + 2, None, None),
        (True, 5, 3, UNIX0 + 4, None, None),
        (True, 5, 2, UNIX0 + 6, None, None),
        (True, 5, 1, UNIX0 + 8, None, None),
        (True, 5, 0, UNIX0 + 10, None, None),
        (False, 5, 0, UNIX0 + 10, 2.0, "rate_limited"),
    ]


def test_refusals_write_nothing_and_refill_is_continuous(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(5):
        limiter.acquire("k", requests=5, interval=10.0)
    for _ in range(100):  # a refusal that wrote would push the wait further out
        assert limiter.acquire("k", requests=5, interval=10.0).retry_after == 2.0
    clock.advance_ns(2_000_000_000 - 1)
    assert limiter.acquire("k", requests=5, interval=10.0).retry_after == pytest.approx(1e-9, rel=1e-6)
    clock.advance_ns(1)
    assert limiter.acquire("k", requests=5, interval=10.0).allowed


def test_cost(limiter: RateLimiter) -> None:
    assert fields(limiter.acquire("k", requests=10, interval=10.0, cost=4)) == (True, 10, 6, UNIX0 + 4, None, None)
    assert fields(limiter.acquire("k", requests=10, interval=10.0, cost=7)) == (
        False,
        10,
        6,
        UNIX0 + 4,
        1.0,
        "rate_limited",
    )
    assert fields(limiter.acquire("k", requests=10, interval=10.0, cost=11)) == (
        False,
        10,
        6,
        UNIX0 + 4,
        None,
        "cost_exceeds_limit",
    )
    assert limiter.acquire("k", requests=10, interval=10.0, cost=6).remaining == 0


def test_a_decision_is_a_read_only_value(limiter: RateLimiter) -> None:
    d = limiter.acquire("k", requests=1, interval=10.0)
    assert isinstance(d, Decision)
    assert repr(d) == f"Decision(allowed=True, limit=1, remaining=0, reset={UNIX0 + 10}, retry_after=None, reason=None)"
    assert repr(limiter.acquire("k", requests=1, interval=10.0)) == (
        f"Decision(allowed=False, limit=1, remaining=0, reset={UNIX0 + 10}, retry_after=10.0, reason='rate_limited')"
    )
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        Decision()
    with pytest.raises(TypeError):
        type("Sub", (Decision,), {})


def test_decisions_are_freed(limiter: RateLimiter) -> None:
    # Each decision holds a reference to its type and gives it back when freed.
    before = sys.getrefcount(Decision)
    kept = [limiter.acquire("k", requests=None) for _ in range(100)]
    assert sys.getrefcount(Decision) == before + 100
    del kept
    for _ in range(1000):
        limiter.acquire("k", requests=10, interval=1.0)
    assert sys.getrefcount(Decision) == before


def test_unlimited(limiter: RateLimiter) -> None:
    for _ in range(1000):
        assert fields(limiter.acquire("k", requests=None, cost=3)) == (True, None, None, None, None, None)


def test_a_changed_quota_starts_full(limiter: RateLimiter) -> None:
    assert [limiter.acquire("k", requests=2, interval=1.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.acquire("k", requests=3, interval=1.0).remaining == 2


def test_defaults_are_100_per_minute(limiter: RateLimiter) -> None:
    d = limiter.acquire("k")
    assert (d.limit, d.remaining, d.reset) == (100, 99, UNIX0 + 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cost": 0},
        {"cost": -1},
        {"requests": 0},
        {"requests": -5},
        {"interval": 0.0},
        {"interval": -1.0},
        {"interval": float("nan")},
        {"interval": 11 * 365 * 86400.0},
    ],
)
def test_invalid_arguments_are_value_errors(limiter: RateLimiter, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        limiter.acquire("k", **kwargs)  # type: ignore[arg-type]


def test_a_full_named_table_is_a_limiter_error() -> None:
    limiter = RateLimiter(capacity=2)
    limiter.acquire("a")
    limiter.acquire("b")
    with pytest.raises(LimiterError, match="full"):
        limiter.acquire("c")


def test_fake_clock() -> None:
    clock = FakeClock(monotonic_ns=5, unix=100.0)
    clock.advance(1.5)
    clock.advance_ns(3)
    assert clock.monotonic_ns == 1_500_000_008
    assert clock.unix == pytest.approx(101.500000003)
    with pytest.raises(ValueError):
        clock.advance(-1.0)
    with pytest.raises(ValueError):
        clock.advance_ns(-1)


# -- the shared file ---------------------------------------------------------


def test_the_region_file_is_private_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "limiter.shm"
    a = RateLimiter(path, capacity=16)
    b = RateLimiter(str(path), capacity=16)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (a.path, a.capacity) == (str(path), 16)
    assert RateLimiter().path is None
    assert [a.acquire("k", requests=3, interval=3600.0).allowed for _ in range(2)] == [True, True]
    assert b.acquire("k", requests=3, interval=3600.0).remaining == 0


def test_opening_a_mismatched_file_is_a_clear_limiter_error(tmp_path: Path) -> None:
    path = tmp_path / "limiter.shm"
    RateLimiter(path, capacity=16)
    with pytest.raises(LimiterError, match="capacity 16"):
        RateLimiter(path, capacity=32)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x01" * 64 * 17)
    with pytest.raises(LimiterError, match="not a limiter region"):
        RateLimiter(junk, capacity=16)
    with pytest.raises(LimiterError):
        RateLimiter(tmp_path / "missing-dir" / "x", capacity=16)


# -- the slot API --------------------------------------------------------------


def test_claim_revoke_and_live(limiter: RateLimiter) -> None:
    assert not limiter.slot_is_live(3, 77)
    limiter.claim_slot(3, 77)
    assert limiter.slot_is_live(3, 77)
    assert not limiter.slot_is_live(3, 78)
    assert not limiter.revoke_slot(3, 78)
    assert limiter.slot_is_live(3, 77)
    assert limiter.revoke_slot(3, 77)
    assert not limiter.slot_is_live(3, 77)


def test_a_reused_slot_retires_the_old_tag_and_refills(limiter: RateLimiter) -> None:
    limiter.claim_slot(5, 1)
    assert limiter.acquire_slot(5, 1, 60.0).allowed
    assert not limiter.acquire_slot(5, 1, 60.0).allowed
    limiter.claim_slot(5, 2)
    assert not limiter.slot_is_live(5, 1)
    assert limiter.slot_is_live(5, 2)
    assert limiter.acquire_slot(5, 1, 60.0).allowed


def test_slot_errors(limiter: RateLimiter) -> None:
    for bad in (-1, 64, 2**40):
        with pytest.raises(IndexError):
            limiter.claim_slot(bad, 1)
        with pytest.raises(IndexError):
            limiter.acquire_slot(bad, 1, 1.0)
    with pytest.raises(ValueError):
        limiter.claim_slot(0, 0)
    with pytest.raises(ValueError):
        limiter.acquire_slot(0, 1, 1.0, cost=0)


def test_generation_is_shared_with_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "limiter.shm"
    limiter = RateLimiter(path, capacity=8)
    assert limiter.generation() == 0
    assert limiter.bump_generation() == 1
    code = (
        "import sys; from agentrouter.limiter import RateLimiter;"
        "l = RateLimiter(sys.argv[1], capacity=8); print(l.generation());"
        "l.claim_slot(2, 9); l.bump_generation()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "1"
    assert limiter.generation() == 2
    assert limiter.slot_is_live(2, 9)


def test_importing_the_limiter_imports_nothing_of_the_gateway() -> None:
    code = "import sys, agentrouter.limiter;print(sorted(m for m in sys.modules if m.startswith('agentrouter')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    # agentrouter.errors: the root LimiterError derives from (no imports of its own).
    assert out.stdout.strip() == "['agentrouter', 'agentrouter._core', 'agentrouter.errors', 'agentrouter.limiter']"


def test_the_module_docstring_example_runs() -> None:
    import doctest

    import agentrouter.limiter

    result = doctest.testmod(agentrouter.limiter)
    assert result.attempted > 0 and result.failed == 0
