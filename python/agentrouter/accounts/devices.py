"""Device labels for the session list ("Firefox on Linux"), from ua-parser."""

from __future__ import annotations

import functools
from typing import Final

from ua_parser import parse

__all__ = ["MAX_USER_AGENT", "device_label"]

MAX_USER_AGENT: Final = 512
"""Characters of a User-Agent kept (and parsed)."""


@functools.lru_cache(maxsize=1024)
def device_label(user_agent: str | None) -> str:
    """``"<browser> on <OS>"``, the parts ua-parser knows; ``"Unknown device"`` when
    it knows neither (or there is no User-Agent)."""
    if not user_agent:
        return "Unknown device"
    result = parse(user_agent[:MAX_USER_AGENT])
    browser = result.user_agent.family if result.user_agent and result.user_agent.family != "Other" else None
    system = result.os.family if result.os and result.os.family != "Other" else None
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"
