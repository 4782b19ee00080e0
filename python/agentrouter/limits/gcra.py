"""The native limiter's GCRA math (``rust/core/src/gcra.rs``) in Python integers, for
the limiters that keep their buckets elsewhere (Redis).

``Quota.of(requests, interval)`` chooses the time unit exactly as ``Quota::new``
does (units of ``1/s`` ns, ``t = I_ns / gcd`` when ``R / gcd(R, I_ns) <= 64``, else
the capped scale and ``t`` rounded up), and ``Quota.decision`` turns the backlog a
bucket reported into the same ``Decision`` fields as ``gcra::decide``: Python's
integers are exact, ``float(int)`` rounds to nearest like Rust's ``as f64``, and the
one division in floating point is the same IEEE operation on the same operands.
So a bucket that computes the backlog exactly decides exactly as the native one
(``tests/test_limits_redis.py`` checks it field by field against the native core).
"""

from __future__ import annotations

import math
from typing import Final

from agentrouter.limits.base import DecisionData, Reason

__all__ = ["MAX_INTERVAL_SECS", "MAX_REQUESTS", "NS_PER_SEC", "Quota", "validate_cost"]

NS_PER_SEC: Final = 1_000_000_000
MAX_INTERVAL_SECS: Final = 10.0 * 365.25 * 86_400.0
MAX_REQUESTS: Final = 2**32 - 1
_MAX_SCALE: Final = 64
_HORIZON_NS: Final = 1 << 57
_ROOM: Final = 2**64 - 1 - (MAX_REQUESTS << 1)
_I64_MAX: Final = 2**63 - 1


def validate_cost(cost: int) -> int:
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost!r}")
    return cost


def _interval_ns(interval: float) -> int:
    x = float(interval) * NS_PER_SEC
    if not (interval > 0.0 and interval <= MAX_INTERVAL_SECS and x >= 0.5):
        raise ValueError(f"interval must be more than 0 and at most 10 years (in seconds), got {interval!r}")
    # Rust's f64::round: half away from zero (Python's round() is half to even).
    whole = math.floor(x)
    return whole + (x - whole >= 0.5)


class Quota:
    """R per I with its unit scale ``s``, emission interval ``t`` and burst
    tolerance ``tau = R·t`` (both in units of ``1/s`` ns)."""

    __slots__ = ("fingerprint", "interval_ns", "requests", "s", "t", "tau")

    def __init__(self, requests: int, interval_ns: int, s: int, t: int) -> None:
        self.requests = requests
        self.interval_ns = interval_ns
        self.s = s
        self.t = t
        self.tau = requests * t
        self.fingerprint = f"{requests}:{interval_ns}"

    @classmethod
    def of(cls, requests: int, interval: float) -> Quota:
        """Validated like the native core (``ValueError``)."""
        interval_ns = _interval_ns(interval)
        if isinstance(requests, bool) or not isinstance(requests, int) or not 1 <= requests <= MAX_REQUESTS:
            raise ValueError(f"requests must be between 1 and {MAX_REQUESTS}, got {requests!r}")
        r, i = requests, interval_ns
        max_scale = min(_ROOM // (_HORIZON_NS + 2 * i), _MAX_SCALE)
        g = math.gcd(r, i)
        if r // g <= max_scale:
            s, t = r // g, i // g
        else:
            s, t = max_scale, -(-(i * max_scale) // r)
        return cls(r, i, s, t)

    @property
    def units_per_sec(self) -> int:
        return self.s * NS_PER_SEC

    def is_exact(self) -> bool:
        return self.t * self.requests == self.interval_ns * self.s

    def decision(self, admitted: bool, backlog: int, unix_ns: int, cost: int) -> DecisionData:
        """The decision for ``cost`` cells at ``unix_ns``; ``backlog`` is the bucket's
        distance from full in units: after this request when admitted, before it
        (unchanged) when refused. As ``gcra::decide`` and ``refused``."""
        unix_ns = min(unix_ns, _I64_MAX)
        if admitted:
            return DecisionData(True, self.requests, (self.tau - backlog) // self.t, self._reset(unix_ns, backlog))
        remaining = (self.tau - backlog) // self.t
        reset = self._reset(unix_ns, backlog)
        if cost > self.requests:
            return DecisionData(False, self.requests, remaining, reset, None, Reason.COST_EXCEEDS_LIMIT)
        after = backlog + cost * self.t
        retry_after = float(after - self.tau) / (self.s * float(NS_PER_SEC))
        return DecisionData(False, self.requests, remaining, reset, retry_after, Reason.RATE_LIMITED)

    def _reset(self, unix_ns: int, backlog: int) -> int:
        """Unix seconds, rounded up, when a bucket ``backlog`` units from full is full."""
        backlog_ns = backlog if self.s == 1 else -(-backlog // self.s)
        full_at = min(unix_ns + backlog_ns, _I64_MAX)
        return -(-full_at // NS_PER_SEC)

    def __repr__(self) -> str:
        return f"Quota(requests={self.requests}, interval_ns={self.interval_ns}, s={self.s}, t={self.t})"
