"""Unusual-usage monitoring: per-key detectors, the periodic runner, the webhook.

* ``detectors``: pure functions over one key's history (and the reasoning behind
  each default threshold);
* ``runner.Monitor``: the one periodic task (lease-guarded across workers);
* ``webhook.WebhookSender``: POSTs alerts with retries and a timeout;
* ``settings``: which of the server ``Settings`` (retention, webhook, thresholds)
  the monitor reads.
"""

from agentrouter.monitor.detectors import Finding, KeyHistory, detect
from agentrouter.monitor.runner import Monitor, RunResult
from agentrouter.monitor.settings import DetectorConfig
from agentrouter.monitor.webhook import WebhookSender

__all__ = [
    "DetectorConfig",
    "Finding",
    "KeyHistory",
    "Monitor",
    "RunResult",
    "WebhookSender",
    "detect",
]
