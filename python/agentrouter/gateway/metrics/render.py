"""The Prometheus text exposition of merged snapshots, by ``prometheus_client``.

One custom collector yields every family of ``FAMILIES`` from a ``Merged`` (summed
over the server's workers) into a ``CollectorRegistry`` of its own, and
``generate_latest`` writes the text: the format is the library's, never written here.
Every family is present even before it has a series (its ``HELP`` and ``TYPE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from agentrouter.gateway.metrics.recorder import ADDED_BUCKETS, TTFB_BUCKETS, UPSTREAM_BUCKETS
from agentrouter.gateway.metrics.snapshot import Merged

__all__ = ["FAMILIES", "PREFIX", "Family", "exposition", "render"]

PREFIX = "agentrouter_"


class Family(NamedTuple):
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


FAMILIES: dict[str, Family] = {
    "requests": Family(
        "counter",
        "Answers on /v1, by route, dialect, status class and provider (empty: answered before one was chosen).",
        ("route", "dialect", "status_class", "provider"),
    ),
    "tokens": Family("counter", "Tokens the upstream providers reported, by provider and kind.", ("provider", "kind")),
    "limiter_refusals": Family("counter", "Requests the rate limiter refused (429), by route.", ("route",)),
    "upstream_latency_seconds": Family(
        "histogram",
        "Time from sending a request upstream to its whole answer (to its head, for a stream), by provider.",
        ("provider",),
        UPSTREAM_BUCKETS,
    ),
    "gateway_added_latency_seconds": Family(
        "histogram",
        "Time the gateway added to an answer: from the request to the answer's head, less the upstream latency.",
        ("provider",),
        ADDED_BUCKETS,
    ),
    "time_to_first_byte_seconds": Family(
        "histogram",
        "Time from a streamed request to the first bytes of its body sent to the caller, by provider.",
        ("provider",),
        TTFB_BUCKETS,
    ),
    "active_streams": Family("gauge", "Streamed answers being relayed now."),
    "usage_pending_requests": Family("gauge", "Requests counted for their keys and not written to the store yet."),
    "usage_pending_records": Family("gauge", "Request-log records not written to the store yet."),
    "usage_batches_written": Family("counter", "Usage batches written to the store."),
    "usage_batches_failed": Family("counter", "Usage batches that failed to be written (kept and retried)."),
    "usage_records_dropped": Family("counter", "Request-log records dropped while too many waited for the store."),
    "limiter_redis_available": Family(
        "gauge", "Workers whose Redis limiter answers (limiter_url set; of agentrouter_workers)."
    ),
    "limiter_redis_outages": Family("counter", "Redis limiter outages begun (limiter_url set)."),
    "limiter_failure_mode_decisions": Family(
        "counter", "Requests decided by limiter_failure_mode while the Redis limiter was unavailable."
    ),
    "workers": Family("gauge", "Worker processes whose counters this answer sums."),
}


def _le(bound: float) -> str:
    """A bucket's ``le`` label, as the library writes its own histograms' bounds."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


class _Collector:
    def __init__(self, merged: Merged) -> None:
        self._merged = merged

    def collect(self) -> Iterator[Metric]:
        merged = self._merged
        for short, family in FAMILIES.items():
            name = PREFIX + short
            labels = list(family.labels)
            metric: Metric
            if family.kind == "histogram":
                hist = HistogramMetricFamily(name, family.help, labels=labels)
                les = [*map(_le, family.buckets), "+Inf"]
                for key, (counts, total) in sorted(merged.histograms.get(short, {}).items()):
                    if len(counts) != len(les):
                        continue
                    running = 0
                    buckets = []
                    for le, n in zip(les, counts, strict=True):
                        running += n
                        buckets.append((le, float(running)))
                    hist.add_metric(list(key), buckets, sum_value=total)
                metric = hist
            else:
                if family.kind == "counter":
                    metric = CounterMetricFamily(name, family.help, labels=labels)
                    source = merged.counters
                else:
                    metric = GaugeMetricFamily(name, family.help, labels=labels)
                    source = merged.gauges
                if short == "workers":
                    metric.add_metric([], float(merged.workers))
                for key, value in sorted(source.get(short, {}).items()):
                    if len(key) == len(labels):
                        metric.add_metric(list(key), float(value))
            yield metric


def _registry(merged: Merged) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(merged))
    return registry


def render(merged: Merged) -> bytes:
    """The text exposition (format 0.0.4) of ``merged``."""
    return generate_latest(_registry(merged))


def exposition(merged: Merged, accept: str = "") -> tuple[bytes, str]:
    """``merged`` in the format the ``Accept`` header asks for, as the library chooses
    it (``choose_encoder``: the text format 0.0.4 by default, 1.0.0 or OpenMetrics
    when asked), and its content type."""
    encode, content_type = choose_encoder(accept)
    return encode(_registry(merged)), content_type
