"""Settings of the request log and the unusual-usage monitor: one frozen object.

Read from the server ``Settings`` when it carries a field of the same name, then from
``AGENTROUTER_*`` variables (the environment wins), then from an optional mapping
(a ``[monitor]`` table of the configuration file, if the server passes one):

====================================  ==========================================  =========
setting                               variable                                    default
====================================  ==========================================  =========
``request_log_retention_days``        ``AGENTROUTER_REQUEST_LOG_RETENTION_DAYS``  30
``alert_webhook_url``                 ``AGENTROUTER_ALERT_WEBHOOK_URL``           none
``alert_webhook_timeout``             ``AGENTROUTER_ALERT_WEBHOOK_TIMEOUT``       5 s
``alert_webhook_retries``             ``AGENTROUTER_ALERT_WEBHOOK_RETRIES``       3
``monitor_enabled``                   ``AGENTROUTER_MONITOR_ENABLED``             true
``monitor_interval``                  ``AGENTROUTER_MONITOR_INTERVAL``            60 s
each ``DetectorConfig`` field ``F``   ``AGENTROUTER_MONITOR_<F>``                 see there
====================================  ==========================================  =========
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Count = Annotated[int, msgspec.Meta(ge=1)]

HOUR = 3600.0
DAY = 86400.0


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the four detectors. The reasoning behind each default is in
    ``agentrouter.monitor.detectors``."""

    # (1) volume far above the key's own baseline
    volume_factor: Annotated[float, msgspec.Meta(gt=1)] = 5.0
    volume_min_requests: _Count = 100
    volume_baseline_days: _Count = 7
    volume_min_active_days: _Count = 3

    # (2) use in hours when the key is normally idle
    unusual_hour_baseline_days: _Count = 14
    unusual_hour_min_active_days: _Count = 7
    unusual_hour_idle_fraction: _Fraction = 0.1
    unusual_hour_neighbour_hours: Annotated[int, msgspec.Meta(ge=0, le=11)] = 1
    unusual_hour_min_requests: _Count = 5

    # (3) a high failure rate
    failure_rate: _Fraction = 0.5
    failure_margin: _Fraction = 0.25
    failure_min_requests: _Count = 20
    failure_baseline_days: _Count = 7
    failure_baseline_min_requests: _Count = 100

    # (4) a client IP never seen before for the key
    new_ip_learning_hours: Annotated[float, msgspec.Meta(ge=0)] = 24.0
    new_ip_lookback_hours: _Positive = 24.0
    new_ip_ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 32
    new_ip_ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64

    # one alert per condition: after an alert of a kind for a key, the same kind
    # stays quiet for that key this many seconds (new_ip: per network, forever)
    volume_spike_cooldown: Annotated[float, msgspec.Meta(ge=0)] = 6 * HOUR
    unusual_hour_cooldown: Annotated[float, msgspec.Meta(ge=0)] = 6 * HOUR
    failure_rate_cooldown: Annotated[float, msgspec.Meta(ge=0)] = 6 * HOUR

    def cooldown(self, kind: str) -> float:
        return float(getattr(self, f"{kind}_cooldown", 0.0))

    @property
    def history_days(self) -> int:
        """How far back the runner reads hourly history for these detectors."""
        return max(self.volume_baseline_days, self.unusual_hour_baseline_days, self.failure_baseline_days) + 1


class MonitorSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    request_log_retention_days: _Positive = 30.0
    """Request-log rows older than this are deleted (hourly rollups and known IPs
    are kept ``rollup_retention_days``, so baselines outlive the log)."""
    rollup_retention_days: _Positive = 400.0
    alert_webhook_url: str | None = None
    """POSTed a JSON document for each new alert; none: alerts are only stored."""
    alert_webhook_timeout: _Positive = 5.0
    alert_webhook_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    """Retries after a failed POST (connection error, timeout, 408, 429 or 5xx),
    with exponential backoff from ``alert_webhook_backoff`` seconds."""
    alert_webhook_backoff: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    alert_webhook_rounds: _Count = 5
    """Monitor runs that try an undelivered alert again before giving up on it."""
    monitor_enabled: bool = True
    """false: the task only prunes the request log; no detector runs."""
    monitor_interval: _Positive = 60.0
    detectors: DetectorConfig = msgspec.field(default_factory=DetectorConfig)


class MonitorSettingsError(ValueError):
    """A monitor setting is wrong; the message names it."""


_TOP = tuple(f for f in MonitorSettings.__struct_fields__ if f != "detectors")


def load_monitor_settings(
    settings: Any = None,
    *,
    env: Mapping[str, str] | None = None,
    table: Mapping[str, Any] | None = None,
) -> MonitorSettings:
    """Build the settings from the server ``Settings`` (fields of the same name),
    a ``[monitor]`` table, then ``AGENTROUTER_*`` variables (highest precedence)."""
    env = os.environ if env is None else env
    top: dict[str, Any] = {}
    det: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in _TOP:
        value = getattr(settings, name, None)
        if value is not None:
            top[name] = value
    for name in DetectorConfig.__struct_fields__:
        value = getattr(settings, f"monitor_{name}", None)
        if value is not None:
            det[name] = value
    for name, value in (table or {}).items():
        if name in _TOP:
            top[name] = value
        elif name in DetectorConfig.__struct_fields__:
            det[name] = value
        else:
            raise MonitorSettingsError(f"monitor.{name}: unknown setting")
    for name in _TOP:
        var = "AGENTROUTER_" + name.upper()
        if var in env:
            top[name] = env[var] if env[var] != "" or name != "alert_webhook_url" else None
            origin[name] = var
    for name in DetectorConfig.__struct_fields__:
        var = "AGENTROUTER_MONITOR_" + name.upper()
        if var in env:
            det[name] = env[var]
            origin[f"detectors.{name}"] = var
    try:
        result = msgspec.convert({**top, "detectors": det}, MonitorSettings, strict=False)
    except msgspec.ValidationError as exc:
        text, _, at = str(exc).rpartition(" - at `")
        path = at.rstrip("`").removeprefix("$.") if text else ""
        where = f" (from {origin[path]})" if path in origin else ""
        raise MonitorSettingsError(f"{path or 'monitor'}: {text or exc}{where}") from None
    url = result.alert_webhook_url
    if url is not None and not url.startswith(("http://", "https://")):
        raise MonitorSettingsError(f"alert_webhook_url: expected an http:// or https:// URL, got {url!r}")
    return result
