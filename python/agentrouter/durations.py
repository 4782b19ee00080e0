"""Human durations: ``90``, ``30s``, ``5m``, ``2h``, ``7d``, ``2w``, ``1h30m``, ``1.5h``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_PLAIN = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError naming the accepted forms otherwise."""
    s = text.strip().lower()
    if _PLAIN.fullmatch(s):
        return float(s)
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(f"{text!r} is not a duration; use a number of seconds or units like 30s, 5m, 2h, 7d, 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact form: 60 → 1m, 3600 → 1h, 90 → 90s."""
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds!r}s"
