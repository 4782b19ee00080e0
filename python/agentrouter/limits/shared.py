"""The shared-memory limiter (``agentrouter._core.RateLimiter``, one host) through the
``Limiter`` interface. Thin: each method is the native call the gateway and the key
service make today, with the same behaviour (``KeyTable.check`` is
``authenticate`` followed by exactly this ``acquire``)."""

from __future__ import annotations

from collections.abc import Iterable

from agentrouter._core import RateLimiter
from agentrouter.limits.base import KeyRef, Verdict

__all__ = ["SharedMemoryLimiter"]


class SharedMemoryLimiter:
    """Buckets, revoked flags and the generation in this host's limiter region."""

    def __init__(self, native: RateLimiter) -> None:
        self.native = native

    async def acquire(self, key: KeyRef, requests: int | None, interval: float, cost: int = 1) -> Verdict:
        return self.acquire_now(key, requests, interval, cost)

    def acquire_now(self, key: KeyRef, requests: int | None, interval: float, cost: int = 1) -> Verdict:
        """``acquire`` without a coroutine: it never waits (the failover path uses it)."""
        native = self.native
        if not native.slot_is_live(key.slot, key.tag):
            return Verdict(None, revoked=True, generation=native.generation())
        decision = native.acquire_slot(key.slot, requests, interval, cost)
        return Verdict(decision, generation=native.generation())

    async def is_revoked(self, key: KeyRef) -> bool:
        return not self.native.slot_is_live(key.slot, key.tag)

    async def claim(self, key: KeyRef) -> None:
        self.native.claim_slot(key.slot, key.tag)

    async def revoke(self, key: KeyRef) -> None:
        self.native.revoke_slot(key.slot, key.tag)

    async def generation(self) -> int:
        return self.native.generation()

    async def bump_generation(self) -> int:
        return self.native.bump_generation()

    async def changed(self, revoke: Iterable[KeyRef] = ()) -> None:
        native = self.native
        for key in revoke:
            native.revoke_slot(key.slot, key.tag)
        native.bump_generation()

    async def aclose(self) -> None:
        pass
