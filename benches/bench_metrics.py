"""What ``/metrics`` costs on the hot path, per request, beside the alternative it was
chosen over, in the same run:

    .venv/bin/python -m pytest benches/bench_metrics.py --benchmark-enable

One proxied request records: its answer (route, dialect, status class, provider and
tokens), its upstream latency and the gateway's added latency (two histograms).

* ``Recorder`` (``gateway.metrics``): integer slots, found by index arithmetic;
* ``prometheus_client`` in process, the same series as labelled ``Counter`` and
  ``Histogram`` children (``.labels(...)`` looked up per request, as an app would);
* ``prometheus_client`` in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: every
  value in an mmap'd file per process), which is what summing over Granian's workers
  would take with the library alone. Its values module is chosen at import time, so
  it is measured in a child process (``subprocess``) with the same loop.

Plus, off the hot path: one snapshot (what each worker writes about once a second)
and one ``/metrics`` rendering of two workers' snapshots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from agentrouter.gateway.metrics import Recorder, merge, render
from agentrouter.gateway.metrics.recorder import ADDED_BUCKETS, UPSTREAM_BUCKETS

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models", "/v1/messages")
PROVIDERS = ("openai", "anthropic", "mock")


def _recorder() -> Recorder:
    r = Recorder(ROUTES, PROVIDERS)
    return r


def test_recorder_per_request(benchmark: Any) -> None:
    r = _recorder()

    def one() -> None:
        r.answer(0, 0, 200, 1, 120, 30)
        r.upstream(1, 0.0123)
        r.added(1, 0.00021)

    benchmark(one)
    assert r.requests[1] > 0 or sum(r.requests) > 0


def _client_metrics(registry: CollectorRegistry) -> tuple[Counter, Counter, Histogram, Histogram]:
    requests = Counter("agentrouter_requests", "", ["route", "dialect", "status_class", "provider"], registry=registry)
    tokens = Counter("agentrouter_tokens", "", ["provider", "kind"], registry=registry)
    upstream = Histogram(
        "agentrouter_upstream_latency_seconds", "", ["provider"], buckets=UPSTREAM_BUCKETS, registry=registry
    )
    added = Histogram(
        "agentrouter_gateway_added_latency_seconds", "", ["provider"], buckets=ADDED_BUCKETS, registry=registry
    )
    return requests, tokens, upstream, added


def test_prometheus_client_in_process_per_request(benchmark: Any) -> None:
    requests, tokens, upstream, added = _client_metrics(CollectorRegistry())

    def one() -> None:
        requests.labels("/v1/chat/completions", "openai", "2xx", "openai").inc()
        tokens.labels("openai", "input").inc(120)
        tokens.labels("openai", "output").inc(30)
        upstream.labels("openai").observe(0.0123)
        added.labels("openai").observe(0.00021)

    benchmark(one)


_MULTIPROCESS = textwrap.dedent(
    """
    import json, sys, time
    from prometheus_client import CollectorRegistry, Counter, Histogram
    sys.path.insert(0, sys.argv[1])
    from bench_metrics import _client_metrics
    requests, tokens, upstream, added = _client_metrics(CollectorRegistry())
    n = int(sys.argv[2])
    best = None
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            requests.labels("/v1/chat/completions", "openai", "2xx", "openai").inc()
            tokens.labels("openai", "input").inc(120)
            tokens.labels("openai", "output").inc(30)
            upstream.labels("openai").observe(0.0123)
            added.labels("openai").observe(0.00021)
        took = (time.perf_counter() - t) / n
        best = took if best is None else min(best, took)
    print(json.dumps({"us_per_request": best * 1e6}))
    """
)


def test_prometheus_client_multiprocess_per_request(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Not a pytest-benchmark fixture (the mode is per process): the best of 5 loops of
    n requests in a child process, printed."""
    enabled = bool(request.config.getoption("benchmark_enable", False))
    n = 20_000 if enabled else 200
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _MULTIPROCESS, str(Path(__file__).parent), str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    us = json.loads(out.stdout)["us_per_request"]
    assert any(tmp_path.iterdir()), "the multiprocess mode wrote no files"
    print(f"\nprometheus_client multiprocess mode: {us:.2f} us per request (best of 5 x {n})")


def test_snapshot(benchmark: Any) -> None:
    r = _recorder()
    for i in range(1000):
        r.answer(i % 6, i % 2, 200 + (i % 4) * 100, i % 4, 10, 5)
        r.upstream(i % 4, 0.001 * (i % 50))
        r.added(i % 4, 0.0001 * (i % 20))
    benchmark(r.snapshot, 1, 2, 3)


def test_render_two_workers(benchmark: Any) -> None:
    a, b = _recorder(), _recorder()
    for r in (a, b):
        for i in range(1000):
            r.answer(i % 6, i % 2, 200 + (i % 4) * 100, i % 4, 10, 5)
            r.upstream(i % 4, 0.001 * (i % 50))
            r.added(i % 4, 0.0001 * (i % 20))
    snaps = [a.snapshot(1, 2, 3), b.snapshot(4, 2, 3)]
    text = benchmark(lambda: render(merge(snaps)))
    assert b"agentrouter_requests_total" in text
