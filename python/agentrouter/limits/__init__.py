"""Limiter backends behind one interface (``base.Limiter``): the shared-memory
limiter of one host (``shared``), Redis for several hosts (``redis``), and the
wrapper that keeps a Redis-backed gateway serving through an outage
(``failover``). The gateway and the management API use only the interface."""

from agentrouter.limits.base import (
    UNLIMITED,
    Decision,
    DecisionData,
    FailureMode,
    KeyId,
    KeyRef,
    Limiter,
    LimiterUnavailable,
    Reason,
    Verdict,
)
from agentrouter.limits.shared import SharedMemoryLimiter

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
    "SharedMemoryLimiter",
    "Verdict",
]
