"""The four detectors over synthetic histories: each must alert on its condition and
stay quiet on histories that are merely unusual-looking (a steady key, a key whose
normal work is at night, a key with a known IP set, a key that always fails a bit)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from agentrouter.monitor.detectors import (
    KeyHistory,
    detect,
    detect_failure_rate,
    detect_new_ip,
    detect_unusual_hour,
    detect_volume_spike,
    ip_network,
)
from agentrouter.monitor.settings import DetectorConfig
from agentrouter.store.analytics import ClientIp, HourlyUsage

CFG = DetectorConfig()
HOUR = 3600
DAY = 86400
# A Monday 00:00 UTC, far from any DST or epoch edge.
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
NOW = T0 + 28 * DAY + 14 * HOUR + 25 * 60  # day 28, 14:25 UTC


def history(
    days: int,
    per_hour: Callable[[int, int], int],
    *,
    end: int = NOW,
    failures: Callable[[int, int], int] = lambda d, h: 0,
) -> list[HourlyUsage]:
    """Clock hours of the ``days`` days before ``end``'s hour (not that hour itself);
    ``per_hour(day, hour_of_day)`` gives the requests."""
    current = end // HOUR * HOUR
    out = []
    for start in range(current - days * DAY, current, HOUR):
        day, hod = (start - T0) // DAY, (start // HOUR) % 24
        n = per_hour(day, hod)
        if n:
            out.append(HourlyUsage(start=start, requests=n, failures_4xx=failures(day, hod)))
    return out


def at(start: int, requests: int, f4: int = 0, f5: int = 0) -> HourlyUsage:
    return HourlyUsage(start=start, requests=requests, failures_4xx=f4, failures_5xx=f5)


CURRENT = NOW // HOUR * HOUR
PREVIOUS = CURRENT - HOUR


def kinds(findings: Iterable[object]) -> list[str]:
    return [f.kind for f in findings]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- volume


def steady(day: int, hod: int) -> int:
    return 60


def office_hours(day: int, hod: int) -> int:
    return 200 if 9 <= hod < 17 and day % 7 < 5 else 0


def night_batch(day: int, hod: int) -> int:
    return 500 if hod in (1, 2, 3) else 0


class TestVolumeSpike:
    def test_steady_key_does_not_alert(self) -> None:
        hours = [*history(14, steady), at(CURRENT, 60)]
        assert detect_volume_spike(hours, NOW, CFG) == []

    def test_steady_key_with_a_busy_hour_below_the_factor_does_not_alert(self) -> None:
        hours = [*history(14, steady), at(CURRENT, 4 * 60)]
        assert detect_volume_spike(hours, NOW, CFG) == []

    def test_five_times_the_usual_peak_alerts(self) -> None:
        hours = [*history(14, steady), at(CURRENT, 5 * 60)]
        [finding] = detect_volume_spike(hours, NOW, CFG)
        assert finding.kind == "volume_spike"
        assert finding.subject == str(CURRENT)
        ev = finding.evidence
        assert ev["requests"] == 300
        assert ev["baseline_typical_peak_hour"] == 60
        assert ev["threshold"] == 300
        assert ev["factor"] == 5.0
        assert ev["window_start"] == CURRENT

    def test_previous_hour_is_evaluated_too(self) -> None:
        hours = [*history(14, steady, end=PREVIOUS), at(PREVIOUS, 1000), at(CURRENT, 10)]
        [finding] = detect_volume_spike(hours, NOW, CFG)
        assert finding.subject == str(PREVIOUS)

    def test_bursty_key_is_compared_with_its_bursts(self) -> None:
        # Office hours, 200 an hour: a busy 800-request hour at 14:00 is 4× the usual peak.
        hours = [*history(14, office_hours), at(CURRENT, 800)]
        assert detect_volume_spike(hours, NOW, CFG) == []
        hours = [*history(14, office_hours), at(CURRENT, 1000)]
        assert kinds(detect_volume_spike(hours, NOW, CFG)) == ["volume_spike"]

    def test_night_batch_key_does_not_alert_at_night(self) -> None:
        night = T0 + 28 * DAY + 2 * HOUR + 600
        hours = [*history(14, night_batch, end=night), at(night // HOUR * HOUR, 520)]
        assert detect_volume_spike(hours, night, CFG) == []

    def test_one_odd_day_does_not_move_the_baseline(self) -> None:
        # One day in the week had a 10 000-request hour; the median of daily peaks ignores it.
        def odd(day: int, hod: int) -> int:
            return 10_000 if day == 25 and hod == 10 else 60

        hours = [*history(7, odd), at(CURRENT, 400)]
        assert kinds(detect_volume_spike(hours, NOW, CFG)) == ["volume_spike"]

    def test_small_absolute_numbers_never_alert(self) -> None:
        hours = [*history(14, lambda d, h: 2), at(CURRENT, 99)]
        assert detect_volume_spike(hours, NOW, CFG) == []
        hours = [*history(14, lambda d, h: 2), at(CURRENT, 100)]
        assert kinds(detect_volume_spike(hours, NOW, CFG)) == ["volume_spike"]

    def test_a_new_key_without_baseline_does_not_alert(self) -> None:
        hours = [*history(2, steady), at(CURRENT, 5000)]
        assert detect_volume_spike(hours, NOW, CFG) == []

    def test_thresholds_are_configurable(self) -> None:
        hours = [*history(14, steady), at(CURRENT, 150)]
        assert detect_volume_spike(hours, NOW, DetectorConfig(volume_factor=2.0)) != []
        assert detect_volume_spike(hours, NOW, DetectorConfig(volume_factor=3.0)) == []


# --------------------------------------------------------------------------- hours


class TestUnusualHour:
    def test_steady_round_the_clock_key_does_not_alert(self) -> None:
        hours = [*history(14, steady), at(CURRENT, 60)]
        assert detect_unusual_hour(hours, NOW, CFG) == []

    def test_office_hours_key_at_3am_alerts(self) -> None:
        three_am = T0 + 28 * DAY + 3 * HOUR + 900
        hours = [*history(14, office_hours, end=three_am), at(three_am // HOUR * HOUR, 40)]
        [finding] = detect_unusual_hour(hours, three_am, CFG)
        ev = finding.evidence
        assert ev["hour_of_day_utc"] == 3
        assert ev["requests"] == 40
        assert ev["days_used_near_this_hour"] == 0
        assert ev["usual_hours_utc"] == list(range(8, 18))  # 9–16, plus the neighbour hours

    def test_night_key_working_at_night_does_not_alert(self) -> None:
        night = T0 + 28 * DAY + 2 * HOUR + 600
        hours = [*history(14, night_batch, end=night), at(night // HOUR * HOUR, 500)]
        assert detect_unusual_hour(hours, night, CFG) == []

    def test_night_key_used_in_the_afternoon_alerts(self) -> None:
        hours = [*history(14, night_batch), at(CURRENT, 30)]
        [finding] = detect_unusual_hour(hours, NOW, CFG)
        assert finding.evidence["hour_of_day_utc"] == 14
        assert finding.evidence["usual_hours_utc"] == [0, 1, 2, 3, 4]

    def test_a_job_an_hour_early_is_not_unusual(self) -> None:
        # Usually 02:00–03:59; today it started at 01:00 (the neighbour hour).
        def job(day: int, hod: int) -> int:
            return 100 if hod in (2, 3) else 0

        one_am = T0 + 28 * DAY + 1 * HOUR + 300
        hours = [*history(14, job, end=one_am), at(one_am // HOUR * HOUR, 100)]
        assert detect_unusual_hour(hours, one_am, CFG) == []

    def test_a_handful_of_requests_is_not_a_pattern(self) -> None:
        hours = [*history(14, night_batch), at(CURRENT, 4)]
        assert detect_unusual_hour(hours, NOW, CFG) == []

    def test_too_little_history_does_not_alert(self) -> None:
        hours = [*history(5, night_batch), at(CURRENT, 100)]
        assert detect_unusual_hour(hours, NOW, CFG) == []

    def test_occasional_use_of_an_hour_makes_it_usual(self) -> None:
        # The key also worked at 14:00 on two of the last 14 days: > 10 % of active days.
        def mostly_night(day: int, hod: int) -> int:
            return 100 if hod in (1, 2, 3) or (hod == 14 and day in (20, 24)) else 0

        hours = [*history(14, mostly_night), at(CURRENT, 50)]
        assert detect_unusual_hour(hours, NOW, CFG) == []


# --------------------------------------------------------------------------- failures


class TestFailureRate:
    def test_healthy_key_does_not_alert(self) -> None:
        hours = [*history(7, steady, failures=lambda d, h: 1), at(CURRENT, 60, f4=2)]
        assert detect_failure_rate(hours, NOW, CFG) == []

    def test_most_requests_failing_alerts_with_the_class_split(self) -> None:
        hours = [*history(7, steady, failures=lambda d, h: 1), at(CURRENT, 60, f4=10, f5=30)]
        [finding] = detect_failure_rate(hours, NOW, CFG)
        ev = finding.evidence
        assert (ev["requests"], ev["failures"], ev["failures_4xx"], ev["failures_5xx"]) == (60, 40, 10, 30)
        assert ev["rate"] == pytest.approx(40 / 60, abs=1e-4)
        assert ev["baseline_rate"] == pytest.approx(1 / 60, abs=1e-4)

    def test_a_key_that_always_fails_a_lot_is_judged_against_itself(self) -> None:
        # 40 % failures is this key's normal; 55 % is within its margin, 70 % is not.
        hours = [*history(7, steady, failures=lambda d, h: 24), at(CURRENT, 60, f4=33)]
        assert detect_failure_rate(hours, NOW, CFG) == []
        hours = [*history(7, steady, failures=lambda d, h: 24), at(CURRENT, 60, f4=42)]
        assert kinds(detect_failure_rate(hours, NOW, CFG)) == ["failure_rate"]

    def test_few_requests_are_not_a_rate(self) -> None:
        hours = [*history(7, steady), at(CURRENT, 19, f5=19)]
        assert detect_failure_rate(hours, NOW, CFG) == []
        hours = [*history(7, steady), at(CURRENT, 20, f5=20)]
        assert kinds(detect_failure_rate(hours, NOW, CFG)) == ["failure_rate"]

    def test_new_key_failing_alerts(self) -> None:
        # No baseline: its rate counts as 0.
        assert kinds(detect_failure_rate([at(CURRENT, 30, f4=30)], NOW, CFG)) == ["failure_rate"]


# --------------------------------------------------------------------------- IPs


def ip(addr: str, first: float, last: float | None = None, requests: int = 10) -> ClientIp:
    return ClientIp(ip=addr, first_seen=first, last_seen=last if last is not None else NOW, requests=requests)


KNOWN = [
    ip("203.0.113.10", NOW - 20 * DAY),
    ip("203.0.113.11", NOW - 19 * DAY),
    ip("198.51.100.7", NOW - 10 * DAY),
]


class TestNewIp:
    def test_known_ip_set_does_not_alert(self) -> None:
        assert detect_new_ip(KNOWN, NOW, CFG) == []

    def test_a_new_ip_alerts_once_with_the_known_set(self) -> None:
        [finding] = detect_new_ip([*KNOWN, ip("192.0.2.99", NOW - 120, requests=3)], NOW, CFG)
        assert finding.kind == "new_ip"
        assert finding.subject == "192.0.2.99"
        ev = finding.evidence
        assert ev["ip"] == "192.0.2.99"
        assert ev["requests"] == 3
        assert ev["known_networks"] == 3
        assert ev["known_sample"] == ["203.0.113.10", "203.0.113.11", "198.51.100.7"]

    def test_the_first_day_of_a_key_is_learning(self) -> None:
        young = [ip("203.0.113.10", NOW - 3 * HOUR), ip("192.0.2.99", NOW - 1 * HOUR)]
        assert detect_new_ip(young, NOW, CFG) == []

    def test_an_ip_first_seen_long_ago_is_not_new(self) -> None:
        # It was new three days ago (the monitor reported it then); not again.
        assert detect_new_ip([*KNOWN, ip("192.0.2.99", NOW - 3 * DAY)], NOW, CFG) == []

    def test_ipv6_privacy_addresses_in_a_known_64_are_not_new(self) -> None:
        known = [*KNOWN, ip("2001:db8:1:2::10", NOW - 15 * DAY)]
        assert detect_new_ip([*known, ip("2001:db8:1:2:a1b2:c3d4:e5f6:1", NOW - 60)], NOW, CFG) == []
        [finding] = detect_new_ip([*known, ip("2001:db8:9:9::1", NOW - 60)], NOW, CFG)
        assert finding.subject == "2001:db8:9:9::/64"

    def test_ipv4_mapped_ipv6_counts_as_ipv4(self) -> None:
        assert detect_new_ip([*KNOWN, ip("::ffff:203.0.113.10", NOW - 60)], NOW, CFG) == []

    def test_network_helper(self) -> None:
        assert ip_network("10.1.2.3", CFG) == "10.1.2.3"
        assert ip_network("10.1.2.3", DetectorConfig(new_ip_ipv4_prefix=24)) == "10.1.2.0/24"
        assert ip_network("not-an-ip", CFG) == "not-an-ip"


# --------------------------------------------------------------------------- all


def test_a_steady_key_raises_nothing_at_all() -> None:
    hours = [*history(28, steady, failures=lambda d, h: 1), at(PREVIOUS, 60, f4=1), at(CURRENT, 25)]
    assert detect(KeyHistory(key_id="k", hours=hours, ips=KNOWN), NOW, CFG) == []


def test_a_leaked_key_raises_every_kind() -> None:
    hours = [*history(28, office_hours), at(CURRENT - 11 * HOUR, 3000, f4=2900)]  # 03:00 UTC
    now = CURRENT - 11 * HOUR + 1800
    ips = [*KNOWN, ip("192.0.2.99", now - 600)]
    found = detect(KeyHistory(key_id="k", hours=hours, ips=ips), now, CFG)
    assert sorted(kinds(found)) == ["failure_rate", "new_ip", "unusual_hour", "volume_spike"]
