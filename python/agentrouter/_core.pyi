"""Type stubs for the native core, ``agentrouter._core`` (built from ``rust/py``).

Checked against the built module by ``tests/test_core_stub.py`` (mypy.stubtest).
"""

from os import PathLike
from typing import Self, final

from agentrouter.errors import AgentRouterError

__all__ = [
    "AUTH_EXPIRED",
    "AUTH_MALFORMED",
    "AUTH_OK",
    "AUTH_REVOKED",
    "AUTH_STALE",
    "AUTH_UNKNOWN",
    "KEY_LENGTH",
    "KEY_PREFIX",
    "Decision",
    "Digester",
    "FakeClock",
    "KeyRecord",
    "KeyTable",
    "LimiterError",
    "RateLimiter",
    "display_prefix",
    "generate_key",
    "is_well_formed",
]

__version__: str

KEY_PREFIX: str
"""``"sk-ar-"``."""
KEY_LENGTH: int
"""44: the prefix, 32 random base62 characters, 6 base62 characters of CRC32."""

# Authentication outcomes returned by ``KeyTable.authenticate`` / ``KeyTable.check``.
AUTH_OK: int
AUTH_MALFORMED: int
"""Wrong prefix, length, alphabet or checksum: refused without any table lookup."""
AUTH_UNKNOWN: int
AUTH_REVOKED: int
"""Deleted: the shared revoked flag is set, the slot now belongs to another key, or
the digest is one of the deleted keys' given to ``replace_all``."""
AUTH_EXPIRED: int
AUTH_STALE: int
"""Unknown to this table, but the shared key-set generation moved since the table
was loaded: reload the table from the store and ask again."""

class LimiterError(AgentRouterError):
    """The shared region cannot be created, opened or used (bad file, full table)."""

def generate_key() -> str:
    """A new ``sk-ar-`` key from the OS CSPRNG."""

def is_well_formed(raw: str) -> bool:
    """Prefix, length, alphabet and checksum; no lookup."""

def display_prefix(raw: str) -> str:
    """The first 12 characters and an ellipsis, e.g. ``sk-ar-7Gh2kQ…``."""

@final
class Digester:
    """HMAC-SHA256 under the server secret (at least 32 bytes)."""

    def __new__(cls, secret: bytes) -> Self: ...
    def digest(self, raw: str) -> bytes:
        """The 32-byte digest of a key: the only form a key is ever stored in."""

@final
class FakeClock:
    """A clock for tests: time moves only when told to."""

    def __new__(cls, monotonic_ns: int = ..., unix: float = ...) -> Self: ...
    def advance(self, seconds: float) -> None: ...
    def advance_ns(self, ns: int) -> None: ...
    @property
    def monotonic_ns(self) -> int: ...
    @property
    def unix(self) -> float: ...

@final
class Decision:
    """The limiter's answer. A refusal is a value, never an exception."""

    @property
    def allowed(self) -> bool: ...
    @property
    def limit(self) -> int | None:
        """R, the bucket's capacity; None when unlimited."""
    @property
    def remaining(self) -> int | None:
        """Whole requests that could be admitted right now after this decision."""
    @property
    def reset(self) -> int | None:
        """Unix time (seconds, rounded up) when the bucket is full again."""
    @property
    def retry_after(self) -> float | None:
        """Seconds until this request would be admitted; refusals only, None
        when it never would (cost above the limit)."""
    @property
    def reason(self) -> str | None:
        """None when allowed; ``"rate_limited"`` or ``"cost_exceeds_limit"``."""

@final
class RateLimiter:
    """GCRA buckets, one ``AtomicU64`` each, in a memory map.

    ``RateLimiter()`` keeps the buckets in this process; ``RateLimiter(path=...)``
    maps a file so every process that opens the same path shares one state.
    Opening an existing file of another capacity or layout raises ``LimiterError``.
    A region serves either named buckets (``acquire``) or slots, not both.

    Errors: ``ValueError`` for ``cost < 1``, ``requests < 1``, an interval outside
    (0, 10 years] (ignored when ``requests`` is None) or tag 0; ``IndexError`` for a
    slot outside ``range(capacity)``; ``LimiterError`` when the named table is full.
    Decisions are exact when ``R / gcd(R, interval in ns) <= 64``; otherwise the
    emission interval is rounded up by under a nanosecond (may refuse a hair early,
    never admits more than R per interval).
    """

    def __new__(
        cls,
        path: str | PathLike[str] | None = None,
        *,
        capacity: int = 65536,
        clock: FakeClock | None = None,
    ) -> Self: ...
    @property
    def path(self) -> str | None: ...
    @property
    def capacity(self) -> int: ...
    def acquire(
        self,
        key: str,
        requests: int | None = 100,
        interval: float = 60.0,
        cost: int = 1,
    ) -> Decision:
        """Take ``cost`` from the bucket named ``key`` (R = requests per interval
        seconds; ``requests=None`` means no limit)."""

    # -- the gateway's slot API: the store assigns each key a slot and a tag --
    def generation(self) -> int:
        """The shared key-set generation counter."""
    def bump_generation(self) -> int:
        """Increment the generation (a key was created or changed); returns the new value."""
    def claim_slot(self, slot: int, tag: int) -> None:
        """Give ``slot`` to the key ``tag`` (non-zero): full bucket, not revoked."""
    def revoke_slot(self, slot: int, tag: int) -> bool:
        """Set the revoked flag if ``slot`` still belongs to ``tag``; True if it did."""
    def slot_is_live(self, slot: int, tag: int) -> bool:
        """True when ``slot`` belongs to ``tag`` and is not revoked."""
    def acquire_slot(
        self,
        slot: int,
        requests: int | None,
        interval: float,
        cost: int = 1,
    ) -> Decision: ...

@final
class KeyRecord:
    """A key as the hot path needs it. The limit is validated here (``ValueError``);
    with ``requests=None`` the key is unlimited and ``interval`` is ignored."""

    def __new__(
        cls,
        id: str,
        slot: int,
        tag: int,
        requests: int | None,
        interval: float,
        expires_at: float | None,
        scope: str,
    ) -> Self: ...
    @property
    def id(self) -> str: ...
    @property
    def slot(self) -> int: ...
    @property
    def tag(self) -> int: ...
    @property
    def requests(self) -> int | None: ...
    @property
    def interval(self) -> float: ...
    @property
    def expires_at(self) -> float | None: ...
    @property
    def scope(self) -> str: ...

@final
class KeyTable:
    """digest → KeyRecord for this process; lock-free reads, atomic swaps.

    A cache of the store, rebuilt by ``replace_all`` when the shared generation moves.
    Deleted keys' digests are kept too, so a deleted key is ``AUTH_REVOKED`` after a
    reload, never ``AUTH_UNKNOWN``.
    """

    def __new__(cls, digester: Digester, limiter: RateLimiter) -> Self: ...
    def __len__(self) -> int:
        """Live keys."""
    @property
    def generation(self) -> int:
        """The shared generation the current contents were loaded at."""
    @property
    def tombstones(self) -> int:
        """Deleted keys' digests held (they answer ``AUTH_REVOKED``)."""
    def replace_all(
        self,
        entries: list[tuple[bytes, KeyRecord]],
        generation: int,
        deleted: list[bytes] = ...,
    ) -> None:
        """Swap in the live keys and the deleted keys' digests (32 bytes each);
        ``ValueError`` for a digest of another size, a repeated digest or one that is
        both live and deleted, ``IndexError`` for a slot outside the region. On error
        the table is unchanged."""
    def authenticate(self, raw: str) -> tuple[int, KeyRecord | None]:
        """(AUTH_*, record): format, digest, constant-time lookup, revoked flag, expiry.
        The record is the ``KeyRecord`` object given to ``replace_all``."""
    def check(self, raw: str, cost: int = 1) -> tuple[int, KeyRecord | None, Decision | None]:
        """``authenticate`` then, when it is AUTH_OK, ``acquire_slot`` for the key."""
