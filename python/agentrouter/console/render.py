"""Page rendering: one Jinja2 environment (autoescape on, undefined names are errors)
and the filters the templates share.

Times are rendered as ``<time datetime="…Z" title="… UTC">`` with the UTC value as
text; the console's script rewrites the text in the browser's own time zone and keeps
the UTC value in ``title`` (seen on hover), so without JavaScript a page still shows
an exact time.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import msgspec
from markupsafe import Markup, escape

from agentrouter.console.assets import Assets

__all__ = ["Renderer", "chips", "duration", "rate_limit", "time_tag"]

TEMPLATES = Path(__file__).with_name("templates")


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def time_tag(ts: float | None, never: str = "never") -> Markup:
    if ts is None:
        return Markup('<span class="never">{}</span>').format(never)
    when = _utc(float(ts))
    iso = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{}" title="{} UTC" data-local>{} UTC</time>').format(
        iso, when.strftime("%Y-%m-%d %H:%M:%S"), when.strftime("%Y-%m-%d %H:%M")
    )


def duration(seconds: float | None) -> str:
    """``60 s``, ``1.5 s``: the product document writes intervals in seconds."""
    if seconds is None:
        return ""
    if float(seconds).is_integer():
        return f"{int(seconds)} s"
    return f"{seconds:g} s"


def rate_limit(limit: dict[str, Any] | None) -> str:
    """``100 / 60 s``, or ``no limit``."""
    if not limit:
        return "no limit"
    return f"{int(limit['requests']):,} / {duration(limit['interval'])}"


def number(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:,.1f} ms"


def chips(metadata: dict[str, Any] | None) -> list[dict[str, str]]:
    """The labels of a key's metadata as chips: text and the ``label`` filter for it
    (``environment=production``; a label whose value is not a string, number or
    boolean filters by its presence)."""
    out = []
    for name, value in (metadata or {}).items():
        if isinstance(value, bool):
            text, filt = ("true" if value else "false"), f"{name}={'true' if value else 'false'}"
        elif isinstance(value, str | int | float):
            text, filt = str(value), f"{name}={value}"
        elif value is None:
            text, filt = "null", name
        else:
            text, filt = msgspec.json.encode(value).decode()[:40], name
        out.append({"name": str(name), "value": text, "filter": filt})
    return out


def pretty_json(value: Any) -> str:
    if not value:
        return ""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def data_json(value: Any) -> str:
    """JSON for a ``data-*`` attribute (escaped by autoescape like any text)."""
    return msgspec.json.encode(value).decode()


def urlquery(pairs: Iterable[tuple[str, str]] | dict[str, str]) -> str:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return urlencode(list(items), quote_via=quote)


class Renderer:
    """The templates with the console's filters and asset URLs."""

    def __init__(self, assets: Assets) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            time=time_tag,
            rate_limit=rate_limit,
            duration=duration,
            number=number,
            ms=ms,
            chips=chips,
            pretty_json=pretty_json,
            data_json=data_json,
            urlquery=urlquery,
        )
        self.env.globals.update(static=assets.url, escape=escape)

    def render(self, template: str, context: dict[str, Any]) -> str:
        return self.env.get_template(template).render(context)
