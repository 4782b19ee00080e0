"""The per-worker recorder: plain integer counters and bucket arrays, about 1 µs per request.

Every label a metric can take is known when the worker starts (the routes, the two
dialects, the five status classes, the configured providers), so each series is a
slot in a flat list, found by index arithmetic: no dict, tuple or object is made per
request. ``snapshot()`` turns the slots into label space (only the series that
moved), which is what the snapshot files hold and what ``/metrics`` merges.

Histograms keep one count per bucket (not cumulative; the exposition cumulates) and
one sum per series; ``bisect`` finds the bucket, ``le`` meaning "at most" as in
Prometheus.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Protocol

from agentrouter.gateway.metrics.snapshot import Sample, Snapshot

__all__ = [
    "ADDED_BUCKETS",
    "DIALECTS",
    "NO_PROVIDER",
    "STATUS_CLASSES",
    "TTFB_BUCKETS",
    "UPSTREAM_BUCKETS",
    "LimiterStats",
    "NullRecorder",
    "Recorder",
    "UsageStats",
]

DIALECTS = ("openai", "anthropic")
"""By ``gateway.errors.Dialect`` value."""
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
NO_PROVIDER = 0
"""The provider index of a request answered before a provider was chosen (label ``""``)."""

# Seconds. An LLM call takes from tens of milliseconds (embeddings, count_tokens) to
# minutes (a long generation): the upstream and first-byte buckets span both. What the
# gateway adds is a fraction of a millisecond when all is well: its buckets start at 100 µs.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ADDED_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_UW = len(UPSTREAM_BUCKETS) + 1  # slots per series: the buckets and +Inf
_AW = len(ADDED_BUCKETS) + 1
_TW = len(TTFB_BUCKETS) + 1


class UsageStats(Protocol):
    """What the recorder reports of the worker's usage recorder (``gateway.usage``)."""

    @property
    def pending_requests(self) -> int: ...
    @property
    def pending_records(self) -> int: ...

    failed_batches: int
    written_batches: int
    dropped_records: int


class LimiterStats(Protocol):
    """What the recorder reports of the worker's Redis limiter (``FailoverLimiter``)."""

    @property
    def available(self) -> bool: ...

    outages: int
    degraded_decisions: int


class Recorder:
    """One per worker. Indices: ``route`` into ``routes``, ``dialect`` 0/1, ``provider``
    into ``providers`` (0: none)."""

    __slots__ = (
        "_p",
        "_route_stride",
        "active_streams",
        "added_counts",
        "added_sums",
        "input_tokens",
        "limiter",
        "output_tokens",
        "providers",
        "refusals",
        "requests",
        "routes",
        "ttfb_counts",
        "ttfb_sums",
        "upstream_counts",
        "upstream_sums",
        "usage",
    )

    def __init__(self, routes: Sequence[str], providers: Sequence[str]) -> None:
        self.routes = tuple(routes)
        self.providers = ("", *providers)
        p = self._p = len(self.providers)
        self._route_stride = len(DIALECTS) * len(STATUS_CLASSES) * p
        self.requests = [0] * (len(self.routes) * self._route_stride)
        self.input_tokens = [0] * p
        self.output_tokens = [0] * p
        self.refusals = [0] * len(self.routes)
        self.upstream_counts = [0] * (p * _UW)
        self.upstream_sums = [0.0] * p
        self.added_counts = [0] * (p * _AW)
        self.added_sums = [0.0] * p
        self.ttfb_counts = [0] * (p * _TW)
        self.ttfb_sums = [0.0] * p
        self.active_streams = 0
        self.usage: UsageStats | None = None
        self.limiter: LimiterStats | None = None

    def route_index(self, label: str) -> int:
        return self.routes.index(label)

    def provider_index(self, name: str) -> int:
        return self.providers.index(name)

    # ------------------------------------------------------------------ hot path

    def answer(self, route: int, dialect: int, status: int, provider: int, inp: int, out: int) -> None:
        """One answer: its route, dialect, status and provider, and the tokens it used."""
        sc = status // 100 - 1
        if sc < 0 or sc > 4:
            sc = 4
        p = self._p
        self.requests[route * self._route_stride + (dialect * 5 + sc) * p + provider] += 1
        if inp:
            self.input_tokens[provider] += inp
        if out:
            self.output_tokens[provider] += out

    def refused(self, route: int) -> None:
        """The limiter refused a request on ``route``."""
        self.refusals[route] += 1

    def upstream(self, provider: int, seconds: float) -> None:
        """The upstream answered (its head, for a stream; the whole answer otherwise)."""
        self.upstream_counts[provider * _UW + bisect_left(UPSTREAM_BUCKETS, seconds)] += 1
        self.upstream_sums[provider] += seconds

    def added(self, provider: int, seconds: float) -> None:
        """The time the gateway itself added to an answer."""
        self.added_counts[provider * _AW + bisect_left(ADDED_BUCKETS, seconds)] += 1
        self.added_sums[provider] += seconds

    def first_byte(self, provider: int, seconds: float) -> None:
        """A stream's first body bytes reached the caller ``seconds`` after the request."""
        self.ttfb_counts[provider * _TW + bisect_left(TTFB_BUCKETS, seconds)] += 1
        self.ttfb_sums[provider] += seconds

    # ------------------------------------------------------------------ off the hot path

    def snapshot(self, pid: int, server: int, started: int) -> Snapshot:
        """The series that moved, in label space."""
        snap = Snapshot(pid=pid, server=server, started=started)
        counters = snap.counters
        gauges = snap.gauges
        p = self._p
        requests: list[Sample] = []
        for i, n in enumerate(self.requests):
            if n:
                route, rest = divmod(i, self._route_stride)
                cell, provider = divmod(rest, p)
                dialect, sc = divmod(cell, len(STATUS_CLASSES))
                requests.append(
                    ([self.routes[route], DIALECTS[dialect], STATUS_CLASSES[sc], self.providers[provider]], n)
                )
        counters["requests"] = requests
        tokens: list[Sample] = []
        for kind, values in (("input", self.input_tokens), ("output", self.output_tokens)):
            tokens += [([self.providers[i], kind], n) for i, n in enumerate(values) if n]
        counters["tokens"] = tokens
        refusals: list[Sample] = [([self.routes[i]], n) for i, n in enumerate(self.refusals) if n]
        counters["limiter_refusals"] = refusals
        for name, bounds, counts, sums in (
            ("upstream_latency_seconds", UPSTREAM_BUCKETS, self.upstream_counts, self.upstream_sums),
            ("gateway_added_latency_seconds", ADDED_BUCKETS, self.added_counts, self.added_sums),
            ("time_to_first_byte_seconds", TTFB_BUCKETS, self.ttfb_counts, self.ttfb_sums),
        ):
            width = len(bounds) + 1
            snap.histograms[name] = [
                ([self.providers[i]], counts[i * width : (i + 1) * width], sums[i])
                for i in range(p)
                if any(counts[i * width : (i + 1) * width])
            ]
        gauges["active_streams"] = [([], self.active_streams)]
        usage = self.usage
        if usage is not None:
            gauges["usage_pending_requests"] = [([], usage.pending_requests)]
            gauges["usage_pending_records"] = [([], usage.pending_records)]
            counters["usage_batches_written"] = [([], usage.written_batches)]
            counters["usage_batches_failed"] = [([], usage.failed_batches)]
            counters["usage_records_dropped"] = [([], usage.dropped_records)]
        limiter = self.limiter
        if limiter is not None:
            gauges["limiter_redis_available"] = [([], 1 if limiter.available else 0)]
            counters["limiter_redis_outages"] = [([], limiter.outages)]
            counters["limiter_failure_mode_decisions"] = [([], limiter.degraded_decisions)]
        return snap


class NullRecorder(Recorder):
    """The recorder with ``metrics_enabled = false``: counts nothing."""

    __slots__ = ()

    def answer(self, route: int, dialect: int, status: int, provider: int, inp: int, out: int) -> None:
        pass

    def refused(self, route: int) -> None:
        pass

    def upstream(self, provider: int, seconds: float) -> None:
        pass

    def added(self, provider: int, seconds: float) -> None:
        pass

    def first_byte(self, provider: int, seconds: float) -> None:
        pass
