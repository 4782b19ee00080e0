"""Unusual-usage monitoring: per-key detectors, the periodic runner, the webhook.

* ``detectors``: pure functions over one key's history (and the reasoning behind
  each default threshold);
* ``runner.Monitor``: the one periodic task (lease-guarded across workers);
* ``webhook.WebhookSender``: POSTs alerts with retries and a timeout;
* ``settings.MonitorSettings``: retention, webhook and thresholds.
"""

from agentrouter.monitor.detectors import Finding, KeyHistory, detect
from agentrouter.monitor.runner import Monitor, RunResult
from agentrouter.monitor.settings import DetectorConfig, MonitorSettings, load_monitor_settings
from agentrouter.monitor.webhook import WebhookSender

__all__ = [
    "DetectorConfig",
    "Finding",
    "KeyHistory",
    "Monitor",
    "MonitorSettings",
    "RunResult",
    "WebhookSender",
    "detect",
    "load_monitor_settings",
]
