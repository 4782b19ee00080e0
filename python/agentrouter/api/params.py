"""Parsing of what arrives as text: times of a usage range, page cursors, labels."""

from __future__ import annotations

import math
import re
from typing import Any

from agentrouter.api.errors import ApiError
from agentrouter.api.schemas import CURSOR_PATTERN, TIME_PATTERN
from agentrouter.durations import parse_duration

_TIME = re.compile(TIME_PATTERN)
_CURSOR = re.compile(CURSOR_PATTERN)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_time(text: str, *, now: float, field: str) -> float:
    """Unix seconds from a Unix time, an RFC 3339 date-time, a UTC date or a
    duration before ``now``; ApiError 422 naming ``field`` otherwise."""
    value = text.strip()
    if _TIME.match(value) is None:
        raise ApiError(
            422,
            f"{field}: {text!r} is not a time; give Unix seconds, an RFC 3339 date-time "
            "(2024-05-01T00:00:00Z), a date (2024-05-01) or a duration before now (24h, 7d)",
            field=field,
        )
    value = value.rstrip("\n")
    if _NUMBER.fullmatch(value):
        return float(value)
    m = _DATETIME.fullmatch(value)
    if m:
        year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
        _check_date(year, month, day, field, text)
        if hour > 23 or minute > 59 or second > 60:
            raise ApiError(422, f"{field}: {text!r} has an impossible time of day", field=field)
        fraction = float("0" + m.group(7)) if m.group(7) else 0.0
        offset = 0
        if m.group(9):
            oh, om = int(m.group(10)), int(m.group(11))
            if oh > 23 or om > 59:
                raise ApiError(422, f"{field}: {text!r} has an impossible UTC offset", field=field)
            offset = (oh * 3600 + om * 60) * (1 if m.group(9) == "+" else -1)
        return _days_from_civil(year, month, day) * 86400.0 + hour * 3600 + minute * 60 + second + fraction - offset
    m = _DATE.fullmatch(value)
    if m:
        year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
        _check_date(year, month, day, field, text)
        return _days_from_civil(year, month, day) * 86400.0
    try:
        return now - parse_duration(value)
    except ValueError:
        raise ApiError(422, f"{field}: {text!r} is not a duration", field=field) from None


def _check_date(year: int, month: int, day: int, field: str, text: str) -> None:
    if not 1 <= month <= 12:
        raise ApiError(422, f"{field}: {text!r} has no month {month}", field=field)
    days = _MONTH_DAYS[month - 1] + (1 if month == 2 and _leap(year) else 0)
    if not 1 <= day <= days:
        raise ApiError(422, f"{field}: {text!r} has no day {day} in that month", field=field)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, 0 included)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


# -- cursors --------------------------------------------------------------------


def encode_cursor(created_at: float, ident: str) -> str:
    """A page position: the last item's (created_at, id). ``repr`` round-trips the float."""
    cursor = f"{float(created_at)!r}:{ident}"
    if _CURSOR.match(cursor) is None:  # not for real timestamps, which always fit
        cursor = f"{max(float(created_at), 0.0):.9f}:{ident}"
    return cursor


def decode_cursor(text: str) -> tuple[float, str]:
    m = _CURSOR.match(text)
    if m is None:
        raise ApiError(422, "cursor: not a cursor; pass the next_cursor of the previous page", field="cursor")
    at, _, ident = text.rstrip("\n").partition(":")
    value = float(at)
    if not math.isfinite(value):
        raise ApiError(422, "cursor: not a cursor; pass the next_cursor of the previous page", field="cursor")
    return value, ident


# -- metadata labels --------------------------------------------------------------


def label_matches(metadata: dict[str, Any], labels: list[str]) -> bool:
    """``name=value`` needs metadata[name] to equal value (strings as they are, other
    JSON values in their JSON text: ``tier=1``, ``beta=true``); ``name`` alone needs
    the name to be present."""
    for label in labels:
        name, sep, want = label.partition("=")
        if name not in metadata:
            return False
        if not sep:
            continue
        have = metadata[name]
        if isinstance(have, str):
            if have != want:
                return False
        elif _json_text(have) != want:
            return False
    return True


def _json_text(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()
