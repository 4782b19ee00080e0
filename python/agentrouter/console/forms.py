"""Form fields to API bodies, and the API's field names back to the form's.

The console does not validate what the API validates: it passes numbers that parse
as numbers and everything else as given, so the API's own 422 names the field, and
that message is shown next to the form's input. The one thing it checks itself is
that the metadata text is JSON, since only JSON can be sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agentrouter.console.http import FormError, Request

__all__ = ["EXPIRY_CHOICES", "GRACE_CHOICES", "PRESETS", "form_field", "key_body"]

PRESETS: tuple[tuple[str, int, int], ...] = (
    ("60 / 60 s", 60, 60),
    ("100 / 60 s", 100, 60),
    ("1000 / 3600 s", 1000, 3600),
    ("10000 / 86400 s", 10000, 86400),
)
"""The product document's examples: 60 per minute, 100 per minute, 1000 per hour,
10000 per day."""

EXPIRY_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "Never"),
    ("86400", "In 1 day"),
    ("604800", "In 7 days"),
    ("2592000", "In 30 days"),
    ("7776000", "In 90 days"),
    ("31536000", "In 1 year"),
)
GRACE_CHOICES: tuple[tuple[str, str], ...] = (
    ("0", "None: the old key stops at once"),
    ("3600", "1 hour"),
    ("86400", "1 day"),
    ("604800", "7 days"),
)

# The API's field (``ApiError.field``) → the form input it belongs to.
_FIELDS = {
    "name": "name",
    "rate_limit": "requests",
    "rate_limit.requests": "requests",
    "rate_limit.interval": "interval",
    "metadata": "metadata",
    "expires_in": "expires",
    "grace_seconds": "grace",
}


def form_field(api_field: str | None) -> str | None:
    """The form input an API error's field names (None: the form as a whole)."""
    if api_field is None:
        return None
    if api_field in _FIELDS:
        return _FIELDS[api_field]
    if api_field.startswith("metadata"):
        return "metadata"
    return None


def number(text: str) -> Any:
    """An int or float when the text is one, else the text itself (for the API to refuse)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


def rate_limit(req: Request) -> dict[str, Any] | None:
    """The ``rate_limit`` of the form: a preset, "No limit", or the two inputs
    (Request Limit empty: no limit; Reset Interval empty: 60 s, the API's default)."""
    preset = req.field("preset", "custom")
    if preset == "none":
        return None
    for _label, requests, interval in PRESETS:
        if preset == f"{requests}/{interval}":
            return {"requests": requests, "interval": interval}
    requests_text = req.field("requests")
    interval_text = req.field("interval")
    if not requests_text:
        if interval_text:
            raise FormError("requests", "Give the request limit for this interval, or choose “No limit”.")
        return None
    out: dict[str, Any] = {"requests": number(requests_text)}
    if interval_text:
        out["interval"] = number(interval_text)
    return out


def metadata(req: Request, *, blank: Any = None) -> Any:
    text = req.field("metadata")
    if not text:
        return blank
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise FormError("metadata", f"Not valid JSON: {exc}.") from None
    except RecursionError:
        raise FormError("metadata", "Nested too deeply.") from None
    if not isinstance(value, dict):
        raise FormError("metadata", 'Labels are a JSON object, e.g. {"environment": "production"}.')
    return value


def key_body(req: Request, *, create: bool) -> dict[str, Any]:
    """The body of ``POST /api/v1/keys`` (create) or ``PATCH /api/v1/keys/{id}``."""
    body: dict[str, Any] = {}
    name = req.field("name")
    if create:
        if name:
            body["name"] = name
    else:
        body["name"] = name or None
    body["rate_limit"] = rate_limit(req)
    body["metadata"] = metadata(req, blank=None if create else {})
    if create and body["metadata"] is None:
        del body["metadata"]
    expires = req.field("expires", "keep" if not create else "")
    if expires == "keep":
        pass
    elif expires in ("", "never"):
        if not create:
            body["expires_in"] = None
    else:
        body["expires_in"] = number(expires)
    if create and body["rate_limit"] is None:
        del body["rate_limit"]
    return body
