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

Key changes (``claim``, ``revoke``, ``bump_generation``) are applied to the local
limiter too, then to ``remote``; those and the other reads raise
``LimiterUnavailable`` during an outage: a change that cannot reach the other
hosts must be reported, not silently kept local.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agentrouter._core import LimiterError
from agentrouter.limits.base import UNLIMITED, FailureMode, KeyRef, Limiter, LimiterUnavailable, Verdict
from agentrouter.limits.shared import SharedMemoryLimiter

__all__ = ["DEFAULT_RETRY_INTERVAL", "FailoverLimiter"]

DEFAULT_RETRY_INTERVAL = 0.5
_log = logging.getLogger("agentrouter.limits")


class FailoverLimiter:
    def __init__(
        self,
        remote: Limiter,
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
        return verdict

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

    async def is_revoked(self, key: KeyRef) -> bool:
        return await self.remote.is_revoked(key)

    async def claim(self, key: KeyRef) -> None:
        await self.local.claim(key)
        await self.remote.claim(key)

    async def revoke(self, key: KeyRef) -> None:
        await self.local.revoke(key)
        await self.remote.revoke(key)

    async def generation(self) -> int:
        return await self.remote.generation()

    async def bump_generation(self) -> int:
        await self.local.bump_generation()
        return await self.remote.bump_generation()

    async def aclose(self) -> None:
        await self.remote.aclose()
