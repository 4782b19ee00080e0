"""``GET /metrics``: the gateway's counters in the Prometheus text format, summed over
the workers of one ``agentrouter serve``.

* ``recorder``  the per-worker in-memory recorder (plain integer slots; the hot path)
* ``snapshot``  each worker's snapshot file, written about once a second; reading and
  summing those of the live workers
* ``render``    the exposition, by ``prometheus_client`` (custom collector)

Why not ``prometheus_client``'s own multiprocess mode: it keeps every sample in an
mmap'd file per process and took about 12 µs per request on the hot path in the
micro benchmark (``benches/bench_metrics.py``), against about 1 µs for the recorder.
"""

from agentrouter.gateway.metrics.endpoint import Endpoint
from agentrouter.gateway.metrics.recorder import NO_PROVIDER, NullRecorder, Recorder
from agentrouter.gateway.metrics.render import FAMILIES, exposition, render
from agentrouter.gateway.metrics.snapshot import Merged, Publisher, Snapshot, clear_stale, merge, read_peers

__all__ = [
    "FAMILIES",
    "NO_PROVIDER",
    "Endpoint",
    "Merged",
    "NullRecorder",
    "Publisher",
    "Recorder",
    "Snapshot",
    "clear_stale",
    "exposition",
    "merge",
    "read_peers",
    "render",
]
