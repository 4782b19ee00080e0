"""The Redis limiter against a real private redis-server: decision for decision the
native limiter's (explicit times), the server's clock, the library's loading, the
keys a call touches, revocation, the generation and its announcements, and no
replay of a call whose outcome is unknown."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from agentrouter._core import KeyRecord
from agentrouter.gateway.app import _common_headers
from agentrouter.gateway.errors import Dialect
from agentrouter.limiter import FakeClock, RateLimiter
from agentrouter.limits import UNLIMITED, Decision, LimiterUnavailable
from agentrouter.limits.gcra import MAX_INTERVAL_SECS, MAX_REQUESTS, Quota
from agentrouter.limits.redis import LIBRARY, RedisLimiter, client_for, library_source
from tests.limiter_backends import NS, UNIX0_NS, RedisBackend, unix_ns
from tests.services import RedisServer, RedisServers, free_port

TIMEOUT = 2.0  # generous: these tests are about decisions, not the outage bound


def fields(d: Decision | None) -> tuple[object, ...]:
    assert d is not None
    return (d.allowed, d.limit, d.remaining, d.reset, d.retry_after, d.reason)


def record(key_id: str = "key_0123456789abcdef", slot: int = 0, tag: int = 1) -> KeyRecord:
    return KeyRecord(key_id, slot, tag, 5, 10.0, None, "inference")


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[RedisLimiter]:
    lim = await RedisLimiter.connect(redis_url, timeout=TIMEOUT)
    try:
        yield lim
    finally:
        await lim.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# -- decision for decision the native limiter's ---------------------------------------

AWKWARD_R = [67, 97, 101, 997, 65_537, 1_000_003, 2**31 - 1, MAX_REQUESTS]


@st.composite
def limits(draw: st.DrawFn) -> tuple[int, float]:
    requests = draw(st.one_of(st.integers(1, 200), st.sampled_from(AWKWARD_R), st.integers(1, MAX_REQUESTS)))
    interval = draw(
        st.one_of(
            st.integers(1, 5_000_000).map(lambda ns: ns / 1e9),  # down to one nanosecond
            st.integers(1, 86_400_000).map(lambda ms: ms / 1e3),
            st.integers(1, int(MAX_INTERVAL_SECS)).map(float),
            st.floats(1e-9, MAX_INTERVAL_SECS),
        )
    )
    return requests, interval


@st.composite
def sequences(draw: st.DrawFn) -> tuple[list[tuple[int, float]], list[tuple[int, int, int]]]:
    """Two limits (so the bucket also changes quota) and steps (gap ns, which, cost)."""
    quotas = [draw(limits()), draw(limits())]
    steps = []
    for _ in range(draw(st.integers(1, 40))):
        which = draw(st.sampled_from([0, 0, 0, 1]))
        r, interval = quotas[which]
        t_ns = max(1, int(interval * 1e9) // r)
        # Gaps around t (refill step by step) and now and then a long one; the sum
        # stays within the native core's horizon (2^57 ns of monotonic time).
        gap = draw(st.one_of(st.integers(0, min(3 * t_ns + 1, 2 * 10**15)), st.integers(0, 2 * 10**15)))
        cost = draw(st.one_of(st.integers(1, min(3, r)), st.integers(1, r + 1), st.integers(1, 2**40)))
        steps.append((gap, which, cost))
    return quotas, steps


@pytest.fixture(scope="module")
def redis_backend(redis_server: RedisServer) -> Iterator[RedisBackend]:
    backend = RedisBackend(redis_server.url)
    yield backend
    backend.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_every_field_of_every_decision_is_the_native_limiters(
    redis_backend: RedisBackend, sequence: tuple[list[tuple[int, float]], list[tuple[int, int, int]]]
) -> None:
    quotas, steps = sequence
    clock = FakeClock()
    native = RateLimiter(clock=clock, capacity=4)
    remote = redis_backend.acquire(clock)
    for gap, which, cost in steps:
        clock.advance_ns(gap)
        requests, interval = quotas[which]
        expected = native.acquire("k", requests=requests, interval=interval, cost=cost)
        got = remote("k", requests=requests, interval=interval, cost=cost)
        assert fields(got) == fields(expected), (requests, interval, cost, unix_ns(clock))


@pytest.mark.parametrize(
    ("requests", "interval", "costs"),
    [
        (MAX_REQUESTS, MAX_INTERVAL_SECS, [1, MAX_REQUESTS - 1, 1, 2, MAX_REQUESTS + 1]),
        (1, MAX_INTERVAL_SECS, [1, 1, 2]),
        (7, MAX_INTERVAL_SECS, [3, 4, 1]),  # exact at a reduced scale
        (67, 1.0, [1] * 70),  # the rounding fallback (s = 64)
        (64, 1e-9, [1, 64, 65, 1]),  # a one-nanosecond interval
        (3, 1.0, [1, 1, 1, 1, 2, 3, 4]),
    ],
)
def test_extreme_quotas_decide_as_the_native_limiter(
    redis_backend: RedisBackend, requests: int, interval: float, costs: list[int]
) -> None:
    clock = FakeClock()
    native = RateLimiter(clock=clock, capacity=4)
    remote = redis_backend.acquire(clock)
    for i, cost in enumerate(costs):
        clock.advance_ns(i * 7_919)
        expected = native.acquire("k", requests=requests, interval=interval, cost=cost)
        assert fields(remote("k", requests=requests, interval=interval, cost=cost)) == fields(expected)


async def test_a_clock_that_went_back_leaves_the_bucket_empty_not_stuck(redis_url: str) -> None:
    # The server's clock stepped back (NTP): the stored TAT is far ahead of "now".
    # As in gcra.rs, the backlog is clamped to tau: the bucket reads as empty, and
    # the wait is at most one emission interval, not the time the clock went back.
    now = [UNIX0_NS]
    limiter = await RedisLimiter.connect(redis_url, timeout=TIMEOUT, test_clock=lambda: now[0])
    try:
        assert (await limiter.acquire_named("k", requests=5, interval=10.0)).remaining == 4
        now[0] -= 3600 * NS
        d = await limiter.acquire_named("k", requests=5, interval=10.0)
        assert (d.allowed, d.remaining, d.retry_after) == (False, 0, 2.0)
        assert d.reset == UNIX0_NS // NS - 3600 + 10
        now[0] += 2 * NS
        assert (await limiter.acquire_named("k", requests=5, interval=10.0)).allowed
    finally:
        await limiter.aclose()


def test_the_quota_is_the_native_cores() -> None:
    # The values gcra.rs's unit tests pin down.
    q = Quota.of(100, 60.0)
    assert (q.s, q.t, q.tau) == (1, 600_000_000, 60_000_000_000)
    q = Quota.of(3, 1.0)
    assert (q.s, q.t, q.tau, q.is_exact()) == (3, 1_000_000_000, 3_000_000_000, True)
    q = Quota.of(67, 1.0)
    assert (q.s, q.t, q.is_exact()) == (64, -(-64_000_000_000 // 67), False)
    assert Quota.of(7, MAX_INTERVAL_SECS).is_exact()
    assert Quota.of(MAX_REQUESTS, MAX_INTERVAL_SECS).s >= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cost": 0},
        {"cost": -1},
        {"requests": 0},
        {"requests": -5},
        {"requests": MAX_REQUESTS + 1},
        {"interval": 0.0},
        {"interval": -1.0},
        {"interval": 4e-10},  # rounds to 0 ns
        {"interval": float("nan")},
        {"interval": float("inf")},
        {"interval": 11 * 365 * 86400.0},
        {"requests": None, "cost": 0},
    ],
)
async def test_invalid_arguments_are_value_errors_as_for_the_native_limiter(
    limiter: RedisLimiter, raw: aioredis.Redis, kwargs: dict[str, float]
) -> None:
    args: dict[str, object] = {"requests": 10, "interval": 1.0, "cost": 1, **kwargs}
    with pytest.raises(ValueError):
        RateLimiter().acquire("k", **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await limiter.acquire_named("k", **args)  # type: ignore[arg-type]
    assert await raw.dbsize() == 0, "nothing was sent"


async def test_no_limit_admits_and_touches_no_bucket(limiter: RedisLimiter, raw: aioredis.Redis) -> None:
    for _ in range(20):
        assert fields(await limiter.acquire_named("k", requests=None, cost=3)) == fields(UNLIMITED)
    verdict = await limiter.acquire(record(), None, 60.0, 5)
    assert verdict.decision is UNLIMITED
    assert (verdict.revoked, verdict.generation, verdict.degraded) == (False, 0, None)
    assert await raw.dbsize() == 0


# -- the server's clock and what the gateway makes of it --------------------------------


async def test_decisions_use_the_servers_clock_and_sub_second_waits_are_not_truncated(limiter: RedisLimiter) -> None:
    before = time.time()
    got = [await limiter.acquire_named("k", requests=2, interval=1.0) for _ in range(3)]
    assert [d.allowed for d in got] == [True, True, False]
    refused = got[2]
    assert refused.reason == "rate_limited" and refused.retry_after is not None
    assert 0 < refused.retry_after <= 0.5
    assert refused.retry_after != round(refused.retry_after), "a whole number of seconds would be a truncation"
    # `reset` is Unix time by the server's clock (the same machine's here).
    assert math.floor(before) + 1 <= refused.reset <= math.ceil(time.time()) + 1  # type: ignore[operator]
    # The gateway's headers from this decision: the wait rounded up, never down.
    headers = dict(_common_headers("req_1", Dialect.OPENAI, refused))
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"retry-after-ms"]) == math.ceil(refused.retry_after * 1000) >= 1
    assert headers[b"x-ratelimit-remaining"] == b"0"


async def test_a_refusal_writes_nothing_and_an_admission_sets_the_expiry(
    limiter: RedisLimiter, raw: aioredis.Redis
) -> None:
    key = record()
    assert (await limiter.acquire(key, 1, 10.0)).decision.allowed  # type: ignore[union-attr]
    bucket = f"{limiter.key_tag(key.id)}:bucket"
    state = await raw.hgetall(bucket)
    ttl = await raw.pttl(bucket)
    assert 9_000 < ttl <= 10_001, "expires when the bucket is full again"
    for _ in range(50):
        d = (await limiter.acquire(key, 1, 10.0)).decision
        assert d is not None and not d.allowed
    assert await raw.hgetall(bucket) == state
    assert await raw.pttl(bucket) <= ttl, "a refusal does not extend the expiry"
    assert sorted(await raw.keys()) == [bucket.encode()]


# -- the library -------------------------------------------------------------------------


async def library_names(raw: aioredis.Redis) -> list[bytes]:
    return [dict(zip(lib[::2], lib[1::2], strict=True))[b"library_name"] for lib in await raw.function_list()]


async def test_the_library_is_versioned_and_loaded_again_when_it_is_gone(
    limiter: RedisLimiter, raw: aioredis.Redis
) -> None:
    assert await library_names(raw) == [LIBRARY.encode()]
    assert LIBRARY.endswith("_v1")
    assert (await limiter.acquire_named("k", requests=3, interval=60.0)).remaining == 2
    await raw.function_flush()  # as a restarted server without persistence
    assert (await limiter.acquire_named("k", requests=3, interval=60.0)).remaining == 1
    assert await library_names(raw) == [LIBRARY.encode()]


async def test_the_production_library_cannot_be_told_the_time(limiter: RedisLimiter, raw: aioredis.Redis) -> None:
    assert "ar_acquire_at_v1" not in str(await raw.function_list())
    with pytest.raises(ResponseError, match="Function not found"):
        await raw.fcall("ar_acquire_at_v1", 2, "{x}:bucket", "{x}:revoked", 0, 0, "1:1000000000", 1, 1, 0, 1, 0, 0)
    # The test variant differs by the flag alone: the code that decides is the same.
    production, test = library_source().splitlines(), library_source(explicit_time=True).splitlines()
    assert [(a, b) for a, b in zip(production, test, strict=True) if a != b] == [
        ("local EXPLICIT_TIME = false", "local EXPLICIT_TIME = true")
    ]


# -- keys, revocation and the generation ----------------------------------------------


async def test_revocation_is_read_with_the_bucket_and_charges_nothing(
    limiter: RedisLimiter, raw: aioredis.Redis
) -> None:
    a, b = record("key_aaaaaaaaaaaaaaaa"), record("key_bbbbbbbbbbbbbbbb")
    assert (await limiter.acquire(a, 5, 10.0)).decision.remaining == 4  # type: ignore[union-attr]
    bucket = await raw.hgetall(f"{limiter.key_tag(a.id)}:bucket")
    assert not await limiter.is_revoked(a)
    await limiter.revoke(a)
    assert await limiter.is_revoked(a)
    verdict = await limiter.acquire(a, 5, 10.0)
    assert (verdict.decision, verdict.revoked, verdict.generation) == (None, True, 0)
    assert await raw.hgetall(f"{limiter.key_tag(a.id)}:bucket") == bucket, "a revoked key is not charged"
    assert not (await limiter.acquire(b, 5, 10.0)).revoked
    await limiter.claim(a)
    verdict = await limiter.acquire(a, 5, 10.0)
    assert not verdict.revoked and verdict.decision is not None and verdict.decision.remaining == 4
    # Every key the call touches carries the key's hash tag (Redis Cluster: one slot).
    assert all(k.startswith(b"{ar:key:key_aaaaaaaaaaaaaaaa}:") for k in await raw.keys("*aaaa*"))


async def test_the_generation_comes_with_every_verdict(limiter: RedisLimiter, redis_url: str) -> None:
    other = await RedisLimiter.connect(redis_url, timeout=TIMEOUT)  # another host
    try:
        assert await limiter.generation() == 0
        assert (await limiter.acquire(record(), 5, 10.0)).generation == 0
        assert await other.bump_generation() == 1
        assert await other.bump_generation() == 2
        assert (await limiter.acquire(record(), 5, 10.0)).generation == 2
        assert (await limiter.acquire(record(), None, 10.0)).generation == 2
        assert await limiter.generation() == 2
    finally:
        await other.aclose()


async def test_changes_are_announced_and_a_lost_announcement_is_found_by_the_poll(
    limiter: RedisLimiter, raw: aioredis.Redis
) -> None:
    poll = 0.3
    changes = limiter.changes(poll_interval=poll)
    try:
        async with asyncio.timeout(5):
            assert await anext(changes) == 0
        # Announced: seen at once (well before the poll would find it).
        started = time.monotonic()
        await limiter.bump_generation()
        async with asyncio.timeout(5):
            assert await anext(changes) == 1
        assert time.monotonic() - started < poll
        # Not announced (a lost message): found by the poll.
        await raw.incr(limiter.generation_key)
        async with asyncio.timeout(poll + 2):
            assert await anext(changes) == 2
        # Redis restarted empty: the counter went back, and that is a change too.
        await raw.flushall()
        async with asyncio.timeout(poll + 2):
            assert await anext(changes) == 0
    finally:
        await changes.aclose()


# -- failures ------------------------------------------------------------------------


class ReplyDropper:
    """A TCP relay to Redis on loopback that can make the connections open now lose
    every reply (as a network that fails after the call went out), while new
    connections work: the one situation where a retry would reach the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.links: list[list[bool]] = []  # per connection: [replies dropped]
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def drop_replies_of_open_connections(self) -> None:
        for link in self.links:
            link[0] = True

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        link = [False]
        self.links.append(link)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await r.read(65536):
                    if not (replies and link[0]):
                        w.write(data)
                        await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))


async def test_a_timed_out_call_is_reported_and_never_sent_again(redis_url: str) -> None:
    relay = ReplyDropper(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    async with relay as url:
        limiter = await RedisLimiter.connect(url, timeout=0.2)
        try:
            assert (await limiter.acquire_named("k", requests=10, interval=3600.0)).remaining == 9
            relay.drop_replies_of_open_connections()
            started = time.monotonic()
            with pytest.raises(LimiterUnavailable, match="Timeout"):
                await limiter.acquire_named("k", requests=10, interval=3600.0)
            assert time.monotonic() - started < 0.2 + 0.15
            # The call ran once (its answer was lost) and was not sent again: a retry
            # (redis-py's default) would have charged the bucket once more.
            d = await limiter.acquire_named("k", requests=10, interval=3600.0)
            assert d.remaining == 7, d
        finally:
            await limiter.aclose()


async def test_an_unreachable_server_is_a_limiter_error_within_the_timeout(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    limiter = await RedisLimiter.connect(server.url, timeout=0.1)
    try:
        server.kill()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire(record(), 5, 10.0)
            assert time.monotonic() - started < 0.1 + 0.1
        with pytest.raises(LimiterUnavailable):
            await limiter.revoke(record())
    finally:
        await limiter.aclose()
    with pytest.raises(LimiterUnavailable):
        await RedisLimiter.connect(server.url, timeout=0.1)


# -- Redis Cluster ---------------------------------------------------------------------


async def test_one_call_per_request_works_on_a_cluster(redis_servers: RedisServers) -> None:
    server = redis_servers.start(
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port())
    )
    client = client_for(server.url, 5.0)
    try:
        await client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        async with asyncio.timeout(10):  # bounded poll until the node serves its slots
            while b"cluster_state:ok" not in await client.execute_command("CLUSTER", "INFO"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # nothing to wait on but the server's answer
        # The bucket and the revoked flag share one slot; the global generation
        # key is in another, which a cluster refuses in one call.
        plain = RedisLimiter(client, timeout=5.0)
        with pytest.raises(LimiterUnavailable, match="same slot"):
            await plain.load()
            await plain.acquire(record(), 5, 10.0)
        limiter = RedisLimiter(client, timeout=5.0, cluster=True)
        verdict = await limiter.acquire(record(), 5, 10.0)
        assert verdict.decision is not None and verdict.decision.remaining == 4
        assert verdict.generation is None, "not read in the call on a cluster"
        assert (await limiter.acquire_named("n", 2, 1.0)).remaining == 1
        await limiter.revoke(record())
        assert (await limiter.acquire(record(), 5, 10.0)).revoked
        assert await limiter.bump_generation() == 1
        assert await limiter.generation() == 1
    finally:
        await client.aclose()
