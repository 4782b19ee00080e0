"""The limiter in Redis: buckets, revoked flags and the key-set generation shared by
every gateway host, decided exactly as the shared-memory limiter decides.

One round trip per request: ``FCALL ar_acquire_v1`` (the Redis Function library in
``gcra.lua``) reads the key's revoked flag, applies GCRA to its bucket and reads
the generation, atomically, on the Redis server's clock (``TIME``: the hosts'
clocks do not matter). The library is loaded with ``FUNCTION LOAD REPLACE`` under
a versioned name on connect and again whenever a call answers "function not
found" (a restarted server without persistence, a fresh replica): no script
cache to miss, no NOSCRIPT storms.

Exactness. The client computes the quota (``gcra.Quota``: the native core's unit
scale, ``t`` and ``tau``) and passes ``tau`` and ``cost·t`` as (seconds, units)
pairs; the function only adds, subtracts and compares pairs whose components stay
below 2^53, so it computes the bucket's backlog exactly (see ``gcra.lua``), and
``Quota.decision`` derives ``remaining``, ``reset`` and ``retry_after`` from the
exact integers with the native core's formulas: the same integers, and the same
single floating-point division for ``retry_after``, which is never truncated (the
gateway's ``Retry-After`` and ``retry-after-ms`` round it up, as for the native
limiter). The differences from the native limiter are the clock's: Redis's
``TIME`` has microsecond resolution, and it is the server's wall clock, which can
step back (NTP); a bucket that a step left with a TAT beyond ``now + tau`` reads
as empty, as the native core's clamp says, and the refusal then stores
``now + tau`` so that it refills from now instead of staying empty until the clock
catches up (the one write a refusal makes). ``tests/test_limits_redis.py``
compares every field of every decision with the native core's at the same (fake)
times.

Keys (``prefix`` defaults to ``ar``; every key of one API key shares the hash tag
``{ar:key:<id>}``, so the function works on Redis Cluster):

* ``{ar:key:<id>}:bucket`` — a hash (quota fingerprint, TAT); expires when the
  bucket is full again (an absent bucket is a full one);
* ``{ar:key:<id>}:revoked`` — set by ``revoke`` (deletion, rotation, a disabled
  owner), never expires;
* ``ar:generation`` — the key-set generation, bumped by ``bump_generation``, which
  also publishes the new value on the channel ``ar:keys``.

The generation is one global key, so it cannot be in every key's slot. On a single
Redis (and with Sentinel) the function reads it as a third declared key and every
verdict carries it. With ``cluster=True`` it is not read in the call (the function
would fail with CROSSSLOT); ``Verdict.generation`` is None and the gateway learns
of changes from ``changes()`` (pub/sub, plus a poll of the counter every
``poll_interval``), which bounds a missed change by the poll interval.

The revocation bound. A deletion is refused on every host from the first request
after ``revoke`` returned: the flag is written to the primary before ``revoke``
returns, and every request reads it in the same atomic call as its bucket. No
message needs to arrive for that, so a lost pub/sub message cannot delay it; the
bound is 0 s plus the request's own round trip (≤ 1 s by a wide margin). Other key
changes (a new key, a new limit or expiry) move the generation: a host sees it on
its next request (single Redis) or within ``poll_interval`` (Cluster, or a host
that has no requests: ``changes()``), and reloads its key table from the store.
Caveats: a failover to a replica that had not received the flag yet can lose it
(asynchronous replication); and during an outage the flag cannot be read (see
``limits.failover``).

Failures. Every call is bounded by ``timeout`` (socket, connect and the whole
call), redis-py's own retries are off, and a failed call is never replayed: a
timeout after sending may have been applied, and sending it again would charge
the bucket twice. Any failure raises ``LimiterUnavailable``; ``limits.failover``
turns that into the configured failure mode.

Tests decide at explicit times: with ``test_clock`` (a callable returning Unix
nanoseconds) the library is loaded with a second function, ``ar_acquire_at_v1``,
that takes the time as arguments and shares all the code of the real one. The
production library (loaded without ``test_clock``) has no such function, so no
production caller can choose the time a bucket is charged at.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from agentrouter.limits.base import UNLIMITED, Decision, KeyRef, LimiterUnavailable, Verdict
from agentrouter.limits.gcra import NS_PER_SEC, Quota, validate_cost

__all__ = ["DEFAULT_TIMEOUT", "LIBRARY", "RedisLimiter", "library_source"]

LIBRARY: Final = "agentrouter_limiter_v1"
DEFAULT_TIMEOUT: Final = 0.1
_ACQUIRE: Final = "ar_acquire_v1"
_ACQUIRE_AT: Final = "ar_acquire_at_v1"
_BUMP: Final = "ar_bump_v1"
_EXPLICIT_OFF: Final = "local EXPLICIT_TIME = false"


def library_source(*, explicit_time: bool = False) -> str:
    """The Lua library; with ``explicit_time``, the variant for tests."""
    source = resources.files("agentrouter.limits").joinpath("gcra.lua").read_text(encoding="utf-8")
    assert _EXPLICIT_OFF in source
    return source.replace(_EXPLICIT_OFF, "local EXPLICIT_TIME = true") if explicit_time else source


@functools.lru_cache(maxsize=256)
def _quota_args(requests: int, interval: float) -> tuple[Quota, tuple[str | int, ...]]:
    """The quota and its fixed arguments (q, s, tau as a pair): built once per limit."""
    q = Quota.of(requests, interval)
    return q, (q.fingerprint, q.s, *divmod(q.tau, q.units_per_sec))


class RedisLimiter:
    """The ``Limiter`` interface on Redis (>= 7.0, for Functions), plus named buckets
    (``acquire_named``, like ``agentrouter.limiter.RateLimiter.acquire``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "ar",
        timeout: float = DEFAULT_TIMEOUT,
        cluster: bool = False,
        test_clock: Callable[[], int] | None = None,
        where: str = "",
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"the key prefix must be non-empty and without braces, got {prefix!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be more than 0 seconds, got {timeout!r}")
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._cluster = cluster
        self._test_clock = test_clock
        self._function = _ACQUIRE if test_clock is None else _ACQUIRE_AT
        self._source = library_source(explicit_time=test_clock is not None)
        self._where = f" at {where}" if where else ""
        self.generation_key: Final = f"{prefix}:generation"
        self.channel: Final = f"{prefix}:keys"

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "ar",
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (the bound of every later call, kept by the client)
        cluster: bool = False,
        test_clock: Callable[[], int] | None = None,
        where: str | None = None,
        lazy: bool = False,
    ) -> RedisLimiter:
        """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``) with every
        operation bounded by ``timeout`` seconds and no retries; loads the library.
        Raises ``LimiterUnavailable`` when Redis cannot be reached, unless ``lazy``:
        then the client is returned anyway (the library is loaded by the first call
        that finds it missing). ``where`` names the server in messages (default: the
        URL without its password)."""
        from agentrouter.config import redact_url

        client = client_for(url, timeout)
        limiter = cls(
            client,
            prefix=prefix,
            timeout=timeout,
            cluster=cluster,
            test_clock=test_clock,
            where=redact_url(url) if where is None else where,
        )
        try:
            await limiter.load()
        except LimiterUnavailable:
            if lazy:
                return limiter
            await client.aclose()
            raise
        except BaseException:
            await client.aclose()
            raise
        return limiter

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    @property
    def timeout(self) -> float:
        return self._timeout

    async def load(self) -> None:
        """``FUNCTION LOAD REPLACE`` the library (idempotent)."""
        await self._bounded(self._client.function_load(self._source, replace=True))

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- keys ----------------------------------------------------------------

    def key_tag(self, key_id: str) -> str:
        return f"{{{self._prefix}:key:{key_id}}}"

    def _keys(self, tag: str, with_generation: bool) -> list[str]:
        keys = [f"{tag}:bucket", f"{tag}:revoked"]
        if with_generation and not self._cluster:
            keys.append(self.generation_key)
        return keys

    # -- the hot path ----------------------------------------------------------

    async def acquire(self, key: KeyRef, requests: int | None, interval: float, cost: int = 1) -> Verdict:
        keys = self._keys(self.key_tag(key.id), with_generation=True)
        reply, quota = await self._acquire(keys, requests, interval, cost)
        revoked, generation = reply[0] == 1, reply[1]
        shown = None if self._cluster else int(generation or 0)
        if revoked:
            return Verdict(None, revoked=True, generation=shown)
        return Verdict(_decision(reply, quota, cost), generation=shown)

    async def acquire_named(
        self, name: str, requests: int | None = 100, interval: float = 60.0, cost: int = 1
    ) -> Decision:
        """Takes ``cost`` from the bucket named ``name``; a bucket of its own namespace,
        never revoked. The arguments and the decision are those of the native
        ``RateLimiter.acquire``."""
        keys = self._keys(f"{{{self._prefix}:bucket:{name}}}", with_generation=False)
        reply, quota = await self._acquire(keys, requests, interval, cost)
        return _decision(reply, quota, cost)

    async def _acquire(
        self, keys: list[str], requests: int | None, interval: float, cost: int
    ) -> tuple[list[Any], Quota | None]:
        validate_cost(cost)
        args: tuple[str | int, ...]
        if requests is None:
            quota, args = None, ("", 0, 0, 0, 0, 0, 0)
        else:
            quota, fixed = _quota_args(requests, interval)
            if cost > quota.requests:
                args = (*fixed, 0, 0, 1)
            else:
                args = (*fixed, *divmod(cost * quota.t, quota.units_per_sec), 0)
        if self._test_clock is not None:
            args = (*divmod(self._test_clock(), NS_PER_SEC), *args)
        return await self._fcall(self._function, keys, args), quota

    async def _fcall(self, function: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        async def call() -> Any:
            try:
                return await self._client.fcall(function, len(keys), *keys, *args)
            except ResponseError as exc:
                if "function not found" not in str(exc).lower():
                    raise
            # The function did not run: loading it and calling again is no replay.
            await self._client.function_load(self._source, replace=True)
            return await self._client.fcall(function, len(keys), *keys, *args)

        return await self._bounded(call())

    async def _bounded(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            detail = str(exc) or "no answer"
            raise LimiterUnavailable(
                f"the Redis limiter{self._where} is unavailable: {type(exc).__name__}: {detail}"
            ) from exc

    # -- key changes -------------------------------------------------------------

    async def is_revoked(self, key: KeyRef) -> bool:
        return bool(await self._bounded(self._client.exists(f"{self.key_tag(key.id)}:revoked")))

    async def claim(self, key: KeyRef) -> None:
        tag = self.key_tag(key.id)
        await self._bounded(self._client.delete(f"{tag}:bucket", f"{tag}:revoked"))

    async def revoke(self, key: KeyRef) -> None:
        await self._bounded(self._client.set(f"{self.key_tag(key.id)}:revoked", b"1"))

    async def generation(self) -> int:
        value = await self._bounded(self._client.get(self.generation_key))
        return int(value or 0)

    async def bump_generation(self) -> int:
        return int(await self._fcall(_BUMP, [self.generation_key], [self.channel]))

    async def changed(self, revoke: Iterable[KeyRef] = ()) -> None:
        """The revoked flags and the generation bump in one round trip (a MULTI block:
        applied together). On a cluster the flags are set first, one call each slot,
        then the generation is bumped."""
        flags = [f"{self.key_tag(key.id)}:revoked" for key in revoke]
        if not flags:
            await self.bump_generation()
            return
        if self._cluster:
            for flag in flags:
                await self._bounded(self._client.set(flag, b"1"))
            await self.bump_generation()
            return

        async def call() -> None:
            for _ in range(2):
                pipe = self._client.pipeline(transaction=True)
                for flag in flags:
                    pipe.set(flag, b"1")
                pipe.fcall(_BUMP, 1, self.generation_key, self.channel)
                results = await pipe.execute(raise_on_error=False)
                failed = [r for r in results if isinstance(r, Exception)]
                if not failed:
                    return
                if not any("function not found" in str(r).lower() for r in failed):
                    raise failed[0]
                # The block ran without the bump (the setting of flags again is harmless).
                await self._client.function_load(self._source, replace=True)
            raise ResponseError("the limiter library could not be loaded")

        await self._bounded(call())

    async def ping(self) -> bool:
        """True when Redis answers (``LimiterUnavailable`` when it does not)."""
        return bool(await self._bounded(self._client.ping()))

    async def changes(self, *, poll_interval: float = 0.5, failures: bool = False) -> AsyncIterator[int | None]:
        """Yields the generation at once, then whenever it changes: on a message of the
        channel, or found by a poll every ``poll_interval`` seconds without one (so a
        lost message delays a reload by at most that). Reconnects after failures
        (yielding the value found then) and never raises ``LimiterUnavailable``; a
        value lower than the last one (Redis restarted empty) is a change too. With
        ``failures``, also yields None for each failed attempt (about every
        ``poll_interval`` while Redis is unreachable), and the first value after one."""
        last: int | None = None
        while True:
            pubsub = self._client.pubsub()
            try:
                await self._bounded(pubsub.subscribe(self.channel))
                while True:
                    current = await self.generation()
                    if current != last:
                        last = current
                        yield current
                    # A message only wakes us: the counter read after it is the truth.
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_interval)
            except (LimiterUnavailable, RedisError, OSError):
                if failures:
                    last = None
                    yield None
                await asyncio.sleep(poll_interval)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def client_for(url: str, timeout: float) -> aioredis.Redis:
    """A redis-py asyncio client whose every wait is bounded by ``timeout`` and which
    never retries (a retried call whose outcome was unknown would count twice)."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=0,
    )
    return client


def _decision(reply: list[Any], quota: Quota | None, cost: int) -> Decision:
    if quota is None:
        return UNLIMITED
    _revoked, _generation, outcome, b_sec, b_units, now_sec, now_ns = reply
    backlog = b_sec * quota.units_per_sec + b_units
    return quota.decision(outcome == 1, backlog, now_sec * NS_PER_SEC + now_ns, cost)
