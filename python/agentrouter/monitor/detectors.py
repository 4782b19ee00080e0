"""The four unusual-usage detectors: pure functions over one key's own history.

Each takes what the store keeps per key — clock-hour counts (``HourlyUsage``: requests
and failures per UTC hour) and the client IPs it was used from (``ClientIp``: first
and last seen) — plus the time ``now`` and a ``DetectorConfig``, and returns
``Finding``s. Nothing here reads a clock or a database, so each is tested with
synthetic histories.

The runner evaluates the *current* clock hour (so far) and the one before it, each
against a baseline of the days before that hour. A key is only ever compared with
itself: there is no global threshold that a busy key trips and a quiet one never
reaches.

Defaults and why
----------------

**Volume spike** (``volume_spike``): an hour's requests reach ``volume_factor`` (5)
times the key's *typical busiest hour*, the median over the last
``volume_baseline_days`` (7) days of each day's peak hourly count, and at least
``volume_min_requests`` (100). The daily peak, not the mean, is the baseline so that
a key whose work comes in bursts (a nightly batch, office hours) is compared with its
bursts and not with its idle hours; the median of seven peaks ignores one odd day,
in either direction. Five times the usual peak is beyond ordinary growth or a busy
day yet well within what a leaked key or a runaway loop produces (they typically
multiply traffic by tens). The floor of 100 keeps a key that makes 3 requests an hour
from alerting at 15. With fewer than ``volume_min_active_days`` (3) days of use there
is no baseline yet and nothing is reported.

**Unusual hour** (``unusual_hour``): at least ``unusual_hour_min_requests`` (5)
requests in a UTC hour of the day in which, over the last
``unusual_hour_baseline_days`` (14) days, the key was used on less than
``unusual_hour_idle_fraction`` (10 %) of the days it was used at all — counting the
``unusual_hour_neighbour_hours`` (1) hours either side, so a job that starts a little
earlier or later than usual is not "unusual". Two weeks cover both weekdays and
weekends; requiring ``unusual_hour_min_active_days`` (7) days of use avoids judging
a key by a couple of days. With 14 active days, 10 % means the hour was used on at
most one of them. A handful of requests (under 5) is a person trying something, not
a pattern worth waking anyone for. A key whose normal work is at night has a night
profile and alerts for daytime use, not for its night.

**Failure rate** (``failure_rate``): in an hour with at least
``failure_min_requests`` (20) requests, at least ``failure_rate`` (50 %) failed
(4xx including 429, or 5xx) *and* the rate is ``failure_margin`` (25 points) above
the key's own rate over the last ``failure_baseline_days`` (7) days (taken as 0 when
those days hold fewer than ``failure_baseline_min_requests`` (100) requests). Half
the requests failing is never normal for a working integration; the margin keeps a
key that always fails 40 % (a client that probes, a validation-heavy workload) from
alerting every hour; 20 requests make a rate meaningful. The evidence splits 4xx
from 5xx, so an upstream outage (5xx on every key) is told from a broken or abused
client (401/403/429, 400).

**New IP** (``new_ip``): a client network the key was never seen from before, first
seen in the last ``new_ip_lookback_hours`` (24), once the key has been in use for
``new_ip_learning_hours`` (24) — a new key's first day teaches it its usual
addresses instead of raising one alert per address. IPv4 addresses are compared
whole (``new_ip_ipv4_prefix`` 32); IPv6 addresses by their /64
(``new_ip_ipv6_prefix``), because hosts rotate privacy addresses inside their /64
all the time. Each network alerts once, ever.

Duplicates: one condition alerts once. The runner stores a finding only when no
alert exists for the same key, kind and subject (an hour, or a network), and, for
the three rate-like kinds, none of that kind for that key in the last
``<kind>_cooldown`` (6 h): a spike that lasts all afternoon is one alert, not one per
hour.
"""

from __future__ import annotations

import ipaddress
import math
import statistics
from collections.abc import Sequence
from typing import Any

import msgspec

from agentrouter.monitor.settings import DAY, HOUR, DetectorConfig
from agentrouter.store.analytics import ClientIp, HourlyUsage
from agentrouter.store.models import AlertKind

__all__ = [
    "Finding",
    "KeyHistory",
    "detect",
    "detect_failure_rate",
    "detect_new_ip",
    "detect_unusual_hour",
    "detect_volume_spike",
    "ip_network",
]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    kind: AlertKind
    subject: str
    """With the key and kind, identifies the condition (for deduplication)."""
    evidence: dict[str, Any]


class KeyHistory(msgspec.Struct, frozen=True, kw_only=True):
    """What the detectors know about one key."""

    key_id: str
    hours: Sequence[HourlyUsage] = ()
    """Clock hours with requests, any order; hours without requests may be absent."""
    ips: Sequence[ClientIp] = ()


def detect(history: KeyHistory, now: float, config: DetectorConfig) -> list[Finding]:
    """Every detector over one key."""
    return [
        *detect_volume_spike(history.hours, now, config),
        *detect_unusual_hour(history.hours, now, config),
        *detect_failure_rate(history.hours, now, config),
        *detect_new_ip(history.ips, now, config),
    ]


# --------------------------------------------------------------------------- helpers


def _evaluated_hours(now: float) -> tuple[int, int]:
    """The current clock hour's start and the previous one's."""
    current = int(math.floor(now / HOUR) * HOUR)
    return current - int(HOUR), current


def _by_start(hours: Sequence[HourlyUsage]) -> dict[int, HourlyUsage]:
    out: dict[int, HourlyUsage] = {}
    for h in hours:
        prev = out.get(h.start)
        if prev is None:
            out[h.start] = h
        else:  # merge duplicates defensively
            out[h.start] = HourlyUsage(
                start=h.start,
                requests=prev.requests + h.requests,
                failures_4xx=prev.failures_4xx + h.failures_4xx,
                failures_5xx=prev.failures_5xx + h.failures_5xx,
            )
    return out


def _baseline(hours: dict[int, HourlyUsage], before: int, days: int) -> list[tuple[int, HourlyUsage]]:
    """(day index, hour) for hours in the ``days`` 24-hour periods before ``before``;
    day 0 is the 24 hours just before it."""
    lo = before - days * int(DAY)
    return [((before - 1 - s) // int(DAY), h) for s, h in hours.items() if lo <= s < before and h.requests > 0]


def _hour_of_day(start: int) -> int:
    return (start // int(HOUR)) % 24


# --------------------------------------------------------------------------- detectors


def detect_volume_spike(hours: Sequence[HourlyUsage], now: float, config: DetectorConfig) -> list[Finding]:
    table = _by_start(hours)
    findings: list[Finding] = []
    for start in _evaluated_hours(now):
        current = table.get(start)
        if current is None or current.requests < config.volume_min_requests:
            continue
        peaks: dict[int, int] = {}
        for day, h in _baseline(table, start, config.volume_baseline_days):
            peaks[day] = max(peaks.get(day, 0), h.requests)
        if len(peaks) < config.volume_min_active_days:
            continue
        typical_peak = statistics.median(peaks.values())
        threshold = max(float(config.volume_min_requests), config.volume_factor * typical_peak)
        if current.requests >= threshold:
            findings.append(
                Finding(
                    kind="volume_spike",
                    subject=str(start),
                    evidence={
                        "window_start": float(start),
                        "window_end": float(start + HOUR),
                        "requests": current.requests,
                        "baseline_typical_peak_hour": typical_peak,
                        "baseline_active_days": len(peaks),
                        "factor": round(current.requests / typical_peak, 2) if typical_peak else None,
                        "threshold": threshold,
                    },
                )
            )
    return findings


def detect_unusual_hour(hours: Sequence[HourlyUsage], now: float, config: DetectorConfig) -> list[Finding]:
    table = _by_start(hours)
    findings: list[Finding] = []
    n = config.unusual_hour_neighbour_hours
    for start in _evaluated_hours(now):
        current = table.get(start)
        if current is None or current.requests < config.unusual_hour_min_requests:
            continue
        baseline = _baseline(table, start, config.unusual_hour_baseline_days)
        active_days = {day for day, _ in baseline}
        if len(active_days) < config.unusual_hour_min_active_days:
            continue
        days_by_hour: list[set[int]] = [set() for _ in range(24)]
        for day, h in baseline:
            days_by_hour[_hour_of_day(h.start)].add(day)

        # Per hour of the day, the days with use in it or in one of its n neighbours.
        days_used = [len(set().union(*(days_by_hour[(hod + k) % 24] for k in range(-n, n + 1)))) for hod in range(24)]

        hod = _hour_of_day(start)
        used = days_used[hod]
        if used / len(active_days) < config.unusual_hour_idle_fraction:
            usual = [h for h in range(24) if days_used[h] / len(active_days) >= config.unusual_hour_idle_fraction]
            findings.append(
                Finding(
                    kind="unusual_hour",
                    subject=str(start),
                    evidence={
                        "window_start": float(start),
                        "window_end": float(start + HOUR),
                        "hour_of_day_utc": hod,
                        "requests": current.requests,
                        "baseline_active_days": len(active_days),
                        "days_used_near_this_hour": used,
                        "usual_hours_utc": usual,
                    },
                )
            )
    return findings


def detect_failure_rate(hours: Sequence[HourlyUsage], now: float, config: DetectorConfig) -> list[Finding]:
    table = _by_start(hours)
    findings: list[Finding] = []
    for start in _evaluated_hours(now):
        current = table.get(start)
        if current is None or current.requests < config.failure_min_requests:
            continue
        rate = current.failures / current.requests
        if rate < config.failure_rate:
            continue
        baseline = _baseline(table, start, config.failure_baseline_days)
        b_requests = sum(h.requests for _, h in baseline)
        b_failures = sum(h.failures for _, h in baseline)
        b_rate = b_failures / b_requests if b_requests >= config.failure_baseline_min_requests else 0.0
        if rate < b_rate + config.failure_margin:
            continue
        findings.append(
            Finding(
                kind="failure_rate",
                subject=str(start),
                evidence={
                    "window_start": float(start),
                    "window_end": float(start + HOUR),
                    "requests": current.requests,
                    "failures": current.failures,
                    "failures_4xx": current.failures_4xx,
                    "failures_5xx": current.failures_5xx,
                    "rate": round(rate, 4),
                    "baseline_rate": round(b_rate, 4),
                    "baseline_requests": b_requests,
                    "threshold": config.failure_rate,
                },
            )
        )
    return findings


def ip_network(ip: str, config: DetectorConfig) -> str:
    """The network an address is judged by: the IPv4 address itself (/32 by
    default), an IPv6 address's /64. Text that is no IP address stands for itself."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = config.new_ip_ipv4_prefix if addr.version == 4 else config.new_ip_ipv6_prefix
    if prefix == addr.max_prefixlen:
        return str(addr)
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def detect_new_ip(ips: Sequence[ClientIp], now: float, config: DetectorConfig) -> list[Finding]:
    if not ips:
        return []
    networks: dict[str, list[ClientIp]] = {}
    for seen in ips:
        networks.setdefault(ip_network(seen.ip, config), []).append(seen)
    first_seen = {net: min(s.first_seen for s in members) for net, members in networks.items()}
    key_first = min(first_seen.values())
    learned_until = key_first + config.new_ip_learning_hours * HOUR
    lookback = now - config.new_ip_lookback_hours * HOUR
    findings: list[Finding] = []
    for net, first in sorted(first_seen.items(), key=lambda item: (item[1], item[0])):
        if first <= lookback or first < learned_until or first > now:
            continue
        members = networks[net]
        known = sorted((n for n, f in first_seen.items() if f < first), key=lambda n: first_seen[n])
        findings.append(
            Finding(
                kind="new_ip",
                subject=net,
                evidence={
                    "ip": min(members, key=lambda s: s.first_seen).ip,
                    "network": net,
                    "first_seen": first,
                    "requests": sum(s.requests for s in members),
                    "known_networks": len(known),
                    "known_sample": known[:10],
                },
            )
        )
    return findings
