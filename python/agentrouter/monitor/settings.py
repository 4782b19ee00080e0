"""The settings of the request log and the unusual-usage monitor.

They are fields of the server ``Settings`` (``agentrouter.config``), read once with
every other setting from the configuration file and ``AGENTROUTER_*`` variables;
the monitor takes that object and never reads the environment itself.

====================================  ==========================================  ==================
setting (``[server]`` unless noted)   variable                                    default
====================================  ==========================================  ==================
``request_log_retention_days``        ``AGENTROUTER_REQUEST_LOG_RETENTION_DAYS``  30
``rollup_retention_days``             ``AGENTROUTER_ROLLUP_RETENTION_DAYS``       400
``alert_webhook_url``                 ``AGENTROUTER_ALERT_WEBHOOK_URL``           none
``alert_webhook_timeout``             ``AGENTROUTER_ALERT_WEBHOOK_TIMEOUT``       5 s
``alert_webhook_retries``             ``AGENTROUTER_ALERT_WEBHOOK_RETRIES``       3
``alert_webhook_backoff``             ``AGENTROUTER_ALERT_WEBHOOK_BACKOFF``       0.5 s
``alert_webhook_rounds``              ``AGENTROUTER_ALERT_WEBHOOK_ROUNDS``        5
``monitor_enabled``                   ``AGENTROUTER_MONITOR_ENABLED``             true
``monitor_interval``                  ``AGENTROUTER_MONITOR_INTERVAL``            60 s
``[monitor]`` threshold ``F``         ``AGENTROUTER_MONITOR_<F>``                 ``DetectorConfig``
====================================  ==========================================  ==================
"""

from __future__ import annotations

from agentrouter.config import DetectorConfig, Settings

__all__ = ["DAY", "HOUR", "DetectorConfig", "Settings"]

HOUR = 3600.0
DAY = 86400.0
