"""A shared (Redis) limiter that keeps answering while it is unreachable.

``FailoverLimiter(remote, local, mode)`` asks ``remote`` first. When a call fails
(``LimiterUnavailable``: refused connection, timeout, an error answer) the outage
begins: it is logged once and counted, and every acquire is answered by the
failure mode, without waiting on ``remote``:

* ``local`` (the default): this host's shared-memory limiter decides, with the
  same limits (so during an outage each host admits up to R per I: the limits
  multiply by the number of hosts, and revocations made elsewhere are not seen
  until the key table is reloaded from the store);
* ``open``: admitted, with no limit reported (no ``X-RateLimit-*`` headers);
* ``closed``: refused with ``Verdict.degraded = closed`` (the gateway answers 503,
  not 429: the caller did nothing wrong); also what ``local`` answers for a key
  whose slot is outside this host's region.

A verdict reached this way has ``degraded`` set and no generation. An acquire
never raises ``LimiterUnavailable`` and never waits longer than the remote's
timeout. Recovery: ``retry_interval`` seconds after the last failure the next
acquire (one, whatever the concurrency) tries ``remote`` again; when that
succeeds the outage ends (logged, with how long it lasted and how many decisions
the failure mode made) and decisions are exact again. So exactness is back at most
``retry_interval`` (default 0.5 s) after Redis answers again, for a host that has
requests (an idle host decides nothing).

Other calls follow the same schedule: during an outage ``generation``,
``is_revoked``, ``ping`` (``check``) raise ``LimiterUnavailable`` at once, without
waiting on ``remote``, until a probe is due. Key changes (``changed``, ``claim``,
``revoke``, ``bump_generation``) are applied to the local limiter, then to
``remote``; a ``changed`` that cannot reach ``remote`` is kept (the keys to revoke,
and one generation bump) and sent when ``remote`` answers again: by ``flush``,
which ``changes()`` calls with every value it yields (about every 0.5 s once
Redis is back) and ``aclose`` calls last. The change itself is in the store
already: other hosts learn of it from there meanwhile (their key tables are
reloaded from the store while Redis is unreachable; see ``auth.KeyAuthenticator``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from agentrouter._core import LimiterError
from agentrouter.limits.base import UNLIMITED, FailureMode, KeyRef, LimiterUnavailable, Verdict
from agentrouter.limits.shared import SharedMemoryLimiter

if TYPE_CHECKING:  # redis-py costs ~50 ms to import: only a process that uses it pays
    from agentrouter.limits.redis import RedisLimiter

T = TypeVar("T")

__all__ = ["DEFAULT_RETRY_INTERVAL", "FailoverLimiter"]

DEFAULT_RETRY_INTERVAL = 0.5
_log = logging.getLogger("agentrouter.limits")


class FailoverLimiter:
    def __init__(
        self,
        remote: RedisLimiter,
        local: SharedMemoryLimiter,
        mode: FailureMode = FailureMode.LOCAL,
        *,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = _log,
    ) -> None:
        self.remote = remote
        self.local = local
        self.mode = FailureMode(mode)
        self._retry_interval = retry_interval
        self._clock = clock
        self._log = logger
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._outage_decisions = 0
        self.outages = 0
        """Outages begun since start."""
        self.degraded_decisions = 0
        """Acquires answered by the failure mode since start."""
        self._pending_revoke: dict[str, KeyRef] = {}
        self._pending_bump = False
        self._flushing: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """False during an outage (until a call to the remote succeeds again)."""
        return self._down_since is None

    async def acquire(self, key: KeyRef, requests: int | None, interval: float, cost: int = 1) -> Verdict:
        if self._down_since is not None:
            now = self._clock()
            if now < self._retry_at:
                return self._degraded(key, requests, interval, cost)
            self._retry_at = now + self._retry_interval  # this request probes; the others wait
        try:
            verdict = await self.remote.acquire(key, requests, interval, cost)
        except LimiterUnavailable as exc:
            self._failed(exc)
            return self._degraded(key, requests, interval, cost)
        if self._down_since is not None:
            self._recovered()
        if self._pending_bump and self._flushing is None:
            # Redis answers again and key changes wait: send them beside this request.
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())
        return verdict

    async def _flush_soon(self) -> None:
        try:
            await self.flush()
        finally:
            self._flushing = None

    def _degraded(self, key: KeyRef, requests: int | None, interval: float, cost: int) -> Verdict:
        self.degraded_decisions += 1
        self._outage_decisions += 1
        if self.mode is FailureMode.LOCAL:
            try:
                local = self.local.acquire_now(key, requests, interval, cost)
            except (IndexError, LimiterError):
                # The key's slot is not in this host's region (a region smaller than
                # the store's slots): no limit can be applied here, so refuse.
                return Verdict(None, degraded=FailureMode.CLOSED)
            return Verdict(local.decision, revoked=local.revoked, degraded=FailureMode.LOCAL)
        if self.mode is FailureMode.OPEN:
            return Verdict(UNLIMITED, degraded=FailureMode.OPEN)
        return Verdict(None, degraded=FailureMode.CLOSED)

    def _failed(self, exc: LimiterUnavailable) -> None:
        now = self._clock()
        self._retry_at = now + self._retry_interval
        if self._down_since is None:
            self._down_since = now
            self._outage_decisions = 0
            self.outages += 1
            self._log.warning("%s; deciding in mode %r until it answers again", exc, self.mode.value)

    def _recovered(self) -> None:
        assert self._down_since is not None
        lasted = self._clock() - self._down_since
        self._down_since = None
        self._log.warning(
            "the Redis limiter answers again after %.1f s; %d decisions were made in mode %r meanwhile",
            lasted,
            self._outage_decisions,
            self.mode.value,
        )

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` on the remote, on the acquire's schedule: during an outage it
        raises at once until a probe is due."""
        if self._down_since is not None:
            now = self._clock()
            if now < self._retry_at:
                raise LimiterUnavailable("the Redis limiter is unavailable (outage in progress)")
            self._retry_at = now + self._retry_interval
        try:
            result = await call()
        except LimiterUnavailable as exc:
            self._failed(exc)
            raise
        if self._down_since is not None:
            self._recovered()
        return result

    async def is_revoked(self, key: KeyRef) -> bool:
        return await self._call(lambda: self.remote.is_revoked(key))

    async def check(self) -> bool:
        """Whether Redis answers now (a PING; during an outage, False at once until a
        probe is due). Ends an outage when it does."""
        try:
            return await self._call(self.remote.ping)
        except LimiterUnavailable:
            return False

    async def claim(self, key: KeyRef) -> None:
        await self.local.claim(key)
        await self._call(lambda: self.remote.claim(key))

    async def revoke(self, key: KeyRef) -> None:
        await self.local.revoke(key)
        await self._call(lambda: self.remote.revoke(key))

    async def generation(self) -> int:
        return await self._call(self.remote.generation)

    async def bump_generation(self) -> int:
        await self.local.bump_generation()
        return await self._call(self.remote.bump_generation)

    async def changed(self, revoke: Iterable[KeyRef] = ()) -> None:
        keys = list(revoke)
        await self.local.changed(keys)
        try:
            await self._call(lambda: self.remote.changed(keys))
        except LimiterUnavailable as exc:
            for key in keys:
                self._pending_revoke[key.id] = key
            self._pending_bump = True
            self._log.warning(
                "a key change was saved but could not be sent to Redis (%s); it is sent when Redis answers "
                "again, and hosts reload their key tables from the store meanwhile",
                exc,
            )

    @property
    def pending(self) -> int:
        """Key changes (revocations, plus one for the generation bump) not sent yet."""
        return len(self._pending_revoke) + int(self._pending_bump)

    async def flush(self) -> bool:
        """Send the key changes kept during an outage; True when none is left."""
        if not self._pending_bump:
            return True
        keys = list(self._pending_revoke.values())
        try:
            await self._call(lambda: self.remote.changed(keys))
        except LimiterUnavailable:
            return False
        for key in keys:
            self._pending_revoke.pop(key.id, None)
        self._pending_bump = bool(self._pending_revoke)
        self._log.warning("sent %d key changes kept while Redis was unavailable", len(keys) + 1)
        return not self._pending_bump

    async def changes(self, *, poll_interval: float = 0.5) -> AsyncIterator[int | None]:
        """``RedisLimiter.changes`` with failures reported (None), sending the kept key
        changes before each value it yields, so a value seen is one that includes them."""
        async for generation in self.remote.changes(poll_interval=poll_interval, failures=True):
            if generation is not None:
                if self._down_since is not None:
                    self._recovered()  # the feed just read Redis: it answers again
                if self._pending_bump:
                    try:
                        if await self.flush():
                            generation = await self.remote.generation()
                    except LimiterUnavailable:
                        generation = None
            yield generation

    async def aclose(self) -> None:
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        if self._pending_bump and not await self.flush():
            self._log.warning(
                "%d key changes were never sent to Redis (it was unavailable): other hosts learn of them "
                "when they reload their key tables from the store",
                self.pending,
            )
        await self.remote.aclose()
