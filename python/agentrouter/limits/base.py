"""The limiter interface the gateway and the management API use, whatever keeps the
buckets: this host's shared memory (``limits.shared``) or Redis (``limits.redis``,
wrapped by ``limits.failover`` for outages).

Per request, after ``KeyTable.authenticate`` (format, digest, lookup, expiry; native,
local) the gateway makes one call, ``acquire(key, requests, interval, cost)``, and
gets a ``Verdict``: whether the key is revoked (deleted, rotated out, its owner
disabled) on any host, the rate decision, and the shared key-set generation read
with it (when it moved, the gateway reloads its key table). Key changes use
``changed(revoke=…)``: the one call made after any change to the keys or to what
they may do (a key created, updated, rotated or deleted; later a user disabled or a
session ended), which sets the revoked flags of the keys given and moves (and
announces) the generation, so every host refuses those keys on its next request and
reloads its key table. ``claim``, ``revoke`` and ``bump_generation`` are its parts.

Every decision has the fields of the native ``Decision`` with the same meaning, so
the gateway derives its headers the same way from either implementation.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final, NamedTuple, Protocol, runtime_checkable

import msgspec

from agentrouter.errors import AgentRouterError

__all__ = [
    "UNLIMITED",
    "Decision",
    "DecisionData",
    "FailureMode",
    "KeyId",
    "KeyRef",
    "Limiter",
    "LimiterUnavailable",
    "Reason",
    "Verdict",
]


class LimiterUnavailable(AgentRouterError):
    """The shared limiter could not be asked (down, timed out, refused the call). The
    call may or may not have been applied; it must not be replayed."""


class Reason:
    RATE_LIMITED: Final = "rate_limited"
    COST_EXCEEDS_LIMIT: Final = "cost_exceeds_limit"


@runtime_checkable
class Decision(Protocol):
    """What the native ``agentrouter._core.Decision`` offers, and ``DecisionData``."""

    @property
    def allowed(self) -> bool: ...
    @property
    def limit(self) -> int | None:
        """R; None when unlimited."""

    @property
    def remaining(self) -> int | None:
        """Whole requests that could be admitted right now, after this decision."""

    @property
    def reset(self) -> int | None:
        """Unix seconds, rounded up, when the bucket is full again."""

    @property
    def retry_after(self) -> float | None:
        """Seconds until this request would be admitted (refusals only; None when it
        never would: cost above the limit)."""

    @property
    def reason(self) -> str | None:
        """None when allowed; ``"rate_limited"`` or ``"cost_exceeds_limit"``."""


class DecisionData(msgspec.Struct, frozen=True, gc=False):
    """A decision made outside the native core, with the native fields."""

    allowed: bool
    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None
    retry_after: float | None = None
    reason: str | None = None


UNLIMITED: Final = DecisionData(True)


class KeyRef(Protocol):
    """The key a bucket and a revoked flag belong to. The native ``KeyRecord`` is one:
    the shared-memory limiter uses ``slot`` and ``tag``, Redis uses ``id``."""

    @property
    def id(self) -> str: ...
    @property
    def slot(self) -> int: ...
    @property
    def tag(self) -> int: ...


class KeyId(NamedTuple):
    """A ``KeyRef`` built from a stored key (its id, slot and tag)."""

    id: str
    slot: int
    tag: int


class FailureMode(enum.StrEnum):
    """What a Redis-backed limiter does while Redis cannot be reached."""

    LOCAL = "local"  # decide with this host's shared-memory limiter (per-host limits)
    OPEN = "open"  # admit without a limit
    CLOSED = "closed"  # refuse: the gateway answers 503 in the caller's dialect


class Verdict(NamedTuple):
    """One request's answer. ``decision`` is None when the key is revoked (nothing
    was charged) or when the limiter is unavailable in ``closed`` mode."""

    decision: Decision | None
    revoked: bool = False
    generation: int | None = None
    """The shared key-set generation read with the decision; None when not read in
    the same call (Redis Cluster, or an outage)."""
    degraded: FailureMode | None = None
    """None: decided exactly by the shared limiter; otherwise the failure mode that
    decided while it was unavailable (``closed``: refuse with 503, not 429)."""


class Limiter(Protocol):
    """The per-key limiter. Invalid limits or costs raise ``ValueError`` (as the
    native limiter does); an unreachable backend raises ``LimiterUnavailable``,
    except through ``limits.failover.FailoverLimiter``, which never raises it."""

    async def acquire(self, key: KeyRef, requests: int | None, interval: float, cost: int = 1) -> Verdict:
        """The revoked check, then ``cost`` from the key's bucket (R = ``requests``
        per ``interval`` seconds; None = no limit), and the generation."""
        ...

    async def is_revoked(self, key: KeyRef) -> bool: ...

    async def claim(self, key: KeyRef) -> None:
        """A new key: a full bucket and no revoked flag."""
        ...

    async def revoke(self, key: KeyRef) -> None:
        """Refuse the key on every host from its next request on."""
        ...

    async def generation(self) -> int:
        """The shared key-set generation (0 before the first change)."""
        ...

    async def changed(self, revoke: Iterable[KeyRef] = ()) -> None:
        """Keys changed: revoke ``revoke`` (refused on every host from its next request
        on) and bump the generation (every host reloads its key table). Call it after
        the change is committed to the store."""
        ...

    async def bump_generation(self) -> int:
        """A key was created or changed: increment (and announce) the generation;
        returns the new value."""
        ...

    async def aclose(self) -> None: ...
