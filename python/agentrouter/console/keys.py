"""The key pages: the list, create (shown once), detail with usage charts, edit,
rotate and delete. Every action is the management API's (``/api/v1/keys…``)."""

from __future__ import annotations

from typing import Any

from agentrouter.console.app import Console, Viewer
from agentrouter.console.forms import EXPIRY_CHOICES, GRACE_CHOICES, PRESETS, form_field, key_body, number
from agentrouter.console.http import FormError, Request, Response, query_with

__all__ = [
    "create_key",
    "delete_confirm",
    "delete_key",
    "key_detail",
    "key_list",
    "new_key",
    "rotate_key",
    "update_key",
]

PAGE = 200
MAX_PAGES = 50
SORTS = {
    "created": "Newest first",
    "last_used": "Last used",
    "name": "Name",
    "requests": "Most requests",
}
RANGES: dict[str, tuple[str, str, str]] = {
    "24h": ("Last 24 hours", "24h", "hour"),
    "7d": ("Last 7 days", "7d", "hour"),
    "30d": ("Last 30 days", "30d", "day"),
    "90d": ("Last 90 days", "90d", "day"),
}
BUCKETS = {"minute": "By minute", "hour": "By hour", "day": "By day"}


async def _all_keys(c: Console, req: Request, labels: list[str], extra: dict[str, str] | None = None) -> Any:
    """Every key the caller may see (following the API's pages), or the failed reply."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        query: dict[str, Any] = {"limit": str(PAGE), "label": labels, "cursor": cursor, **(extra or {})}
        reply = await c.call(req, "GET", "/api/v1/keys", query=query)
        if not reply.ok:
            return reply
        rows += reply.data["data"]
        cursor = reply.data.get("next_cursor")
        if not reply.data.get("has_more") or not cursor:
            break
    return rows


def _sort(rows: list[dict[str, Any]], how: str) -> None:
    if how == "last_used":
        rows.sort(key=lambda r: (r["last_used_at"] is None, -(r["last_used_at"] or 0), -r["created_at"]))
    elif how == "name":
        rows.sort(key=lambda r: ((r["name"] or "").casefold(), r["created_at"]))
    elif how == "requests":
        rows.sort(key=lambda r: (-r["usage"]["requests"], -r["created_at"]))
    else:
        rows.sort(key=lambda r: (-r["created_at"], r["id"]))


async def key_list(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    labels = [label.strip() for label in req.query.get("label", []) if label.strip()]
    search = req.arg("q").strip()
    sort = req.arg("sort", "created")
    if sort not in SORTS:
        sort = "created"
    # Whose keys: a member's own; an admin chooses "my keys" or "all keys" (with each
    # key's owner); the operator's management key sees all.
    whose = req.arg("owner", "me") if viewer.admin else "me"
    if viewer.user is None:
        whose = "all"
    if whose not in ("me", "all"):
        whose = "me"
    result = await _all_keys(c, req, labels, {"owner": "me"} if whose == "me" and viewer.user else None)
    owners: dict[str, dict[str, Any]] = {}
    if whose == "all" and viewer.user is not None:
        from agentrouter.console.admin import users_by_id

        owners = await users_by_id(c, req)
    errors: dict[str, str] = {}
    keys: list[dict[str, Any]] = []
    if isinstance(result, list):
        keys = result
    elif result.status == 422:
        errors["label"] = result.message
    else:
        raise c.fail(req, viewer, result)
    total = len(keys)
    if search:
        needle = search.casefold()
        keys = [k for k in keys if needle in (k["name"] or "").casefold() or needle in k["prefix"].casefold()]
    _sort(keys, sort)
    filtered = bool(labels or search)
    return c.page(
        req,
        "keys.html",
        viewer,
        nav="keys",
        title="API keys",
        keys=keys,
        total=total,
        labels=labels,
        search=search,
        sort=sort,
        sorts=SORTS,
        filtered=filtered,
        errors=errors,
        whose=whose,
        owners=owners,
        tabs=viewer.admin and viewer.user is not None,
        tab_url=lambda value: "?" + query_with(req, owner=value),
        without_label=lambda label: "?" + query_with(req, label=[x for x in labels if x != label]),
        with_label=lambda label: "?" + query_with(req, label=sorted({*labels, label})),
    )


# -- create ------------------------------------------------------------------------


def _form_values(req: Request) -> dict[str, str]:
    return {name: req.field(name) for name in ("name", "preset", "requests", "interval", "metadata", "expires")}


def _new_page(c: Console, req: Request, viewer: Viewer, values: dict[str, str], errors: dict[str, str]) -> Response:
    return c.page(
        req,
        "key_new.html",
        viewer,
        nav="keys",
        title="Create API key",
        values=values,
        errors=errors,
        presets=PRESETS,
        expiry_choices=EXPIRY_CHOICES,
    )


async def new_key(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    return _new_page(c, req, viewer, {"preset": "custom"}, {})


def _error_for(errors: dict[str, str], api_field: str | None, message: str) -> None:
    errors[form_field(api_field) or "form"] = message


async def create_key(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    values = _form_values(req)
    errors: dict[str, str] = {}
    try:
        body = key_body(req, create=True)
    except FormError as exc:
        errors[exc.field] = exc.message
        return _new_page(c, req, viewer, values, errors)
    reply = await c.call(req, "POST", "/api/v1/keys", body=body, csrf=req.field("csrf_token"))
    if reply.status == 401:
        raise c.fail(req, viewer, reply, back="/keys/new")
    if not reply.ok:
        _error_for(errors, reply.field, reply.message)
        return _new_page(c, req, viewer, values, errors)
    return _shown_once(c, req, viewer, reply.data, rotated_from=None)


def _shown_once(
    c: Console, req: Request, viewer: Viewer, created: dict[str, Any], rotated_from: dict[str, Any] | None
) -> Response:
    # This gateway's address: the configured public URL, else the one the browser used.
    base = c.settings.base_url if c.settings.public_url else req.base_url()
    return c.page(
        req,
        "key_created.html",
        viewer,
        http_status=201,
        nav="keys",
        title="Key rotated" if rotated_from else "Key created",
        created=created,
        rotated_from=rotated_from,
        base_url=base,
    )


# -- detail ------------------------------------------------------------------------


def _charts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart specs (``static/chart.js``) of a usage report's series."""
    series = report["series"]
    x = [b["start"] for b in series]
    common = {"x": x, "step": report["bucket_seconds"], "bucket": report["bucket"]}
    return [
        {
            **common,
            "id": "chart-requests",
            "title": "Requests and failures",
            "kind": "bar",
            "unit": "requests",
            "series": [
                {"name": "Requests", "values": [b["requests"] for b in series]},
                {"name": "Failures", "values": [b["failures_4xx"] + b["failures_5xx"] for b in series]},
            ],
        },
        {
            **common,
            "id": "chart-tokens",
            "title": "Tokens",
            "kind": "line",
            "unit": "tokens",
            "series": [
                {"name": "Input tokens", "values": [b["input_tokens"] for b in series]},
                {"name": "Output tokens", "values": [b["output_tokens"] for b in series]},
            ],
        },
        {
            **common,
            "id": "chart-latency",
            "title": "Latency",
            "kind": "line",
            "unit": "ms",
            "series": [
                {"name": "p50", "values": [b["latency_ms_p50"] for b in series]},
                {"name": "p95", "values": [b["latency_ms_p95"] for b in series]},
            ],
        },
    ]


async def _detail(
    c: Console,
    req: Request,
    viewer: Viewer,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    key_id = req.params["key_id"]
    reply = await c.call(req, "GET", f"/api/v1/keys/{key_id}")
    if not reply.ok:
        raise c.fail(req, viewer, reply, back=f"/keys/{key_id}")
    key = reply.data
    range_name = req.arg("range", "24h")
    if range_name not in RANGES:
        range_name = "24h"
    _, since, default_by = RANGES[range_name]
    by = req.arg("by", default_by)
    if by not in BUCKETS:
        by = default_by
    usage_errors: dict[str, str] = {}
    usage = await c.call(req, "GET", f"/api/v1/keys/{key_id}/usage", query={"since": since, "by": by})
    report = None
    if usage.ok:
        report = usage.data
    elif usage.status == 422:
        usage_errors[usage.field or "by"] = usage.message
    else:
        raise c.fail(req, viewer, usage, back=f"/keys/{key_id}")
    alerts = await c.call(req, "GET", "/api/v1/alerts", query={"key_id": key_id, "status": "open", "limit": "50"})
    if not alerts.ok:
        raise c.fail(req, viewer, alerts, back=f"/keys/{key_id}")
    from agentrouter.console.alerts import describe

    if values is None:
        limit = key["rate_limit"]
        values = {
            "name": key["name"] or "",
            "requests": str(limit["requests"]) if limit else "",
            "interval": number_text(limit["interval"]) if limit else "",
            "metadata": "",
            "expires": "keep",
        }
    return c.page(
        req,
        "key_detail.html",
        viewer,
        http_status=status,
        nav="keys",
        title=key["name"] or key["prefix"],
        key=key,
        report=report,
        charts=_charts(report) if report else [],
        ranges=RANGES,
        range_name=range_name,
        buckets=BUCKETS,
        by=by,
        usage_errors=usage_errors,
        alerts=[{**a, "text": describe(a)} for a in alerts.data["data"]],
        errors=errors or {},
        values=values,
        presets=PRESETS,
        edit_expiry_choices=[("keep", "Keep as it is"), *EXPIRY_CHOICES[1:], ("never", "Never")],
        grace_choices=GRACE_CHOICES,
    )


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


async def key_detail(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    return await _detail(c, req, viewer)


async def update_key(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    key_id = req.params["key_id"]
    values = _form_values(req)
    errors: dict[str, str] = {}
    try:
        body = key_body(req, create=False)
    except FormError as exc:
        errors[exc.field] = exc.message
        return await _detail(c, req, viewer, errors=errors, values=values)
    reply = await c.call(req, "PATCH", f"/api/v1/keys/{key_id}", body=body, csrf=req.field("csrf_token"))
    if reply.status in (401, 404):
        raise c.fail(req, viewer, reply, back=f"/keys/{key_id}")
    if not reply.ok:
        _error_for(errors, reply.field, reply.message)
        return await _detail(c, req, viewer, errors=errors, values=values)
    return c.flash(f"/keys/{key_id}", "Saved. The new settings apply from the key's next request.")


async def rotate_key(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    key_id = req.params["key_id"]
    old = await c.call(req, "GET", f"/api/v1/keys/{key_id}")
    if not old.ok:
        raise c.fail(req, viewer, old, back=f"/keys/{key_id}")
    grace = number(req.field("grace", "0") or "0")
    reply = await c.call(
        req, "POST", f"/api/v1/keys/{key_id}/rotate", body={"grace_seconds": grace}, csrf=req.field("csrf_token")
    )
    if reply.status in (401, 404):
        raise c.fail(req, viewer, reply, back=f"/keys/{key_id}")
    if not reply.ok:
        return await _detail(c, req, viewer, errors={form_field(reply.field) or "grace": reply.message})
    return _shown_once(c, req, viewer, reply.data, rotated_from={**old.data, "grace": grace})


async def delete_confirm(c: Console, req: Request) -> Response:
    """The confirmation as a page of its own, for browsers without JavaScript (with
    it, the key page opens the same question in a dialog)."""
    viewer = await c.require_viewer(req)
    key_id = req.params["key_id"]
    reply = await c.call(req, "GET", f"/api/v1/keys/{key_id}")
    if not reply.ok:
        raise c.fail(req, viewer, reply, back=f"/keys/{key_id}")
    return c.page(req, "key_delete.html", viewer, nav="keys", title="Delete key", key=reply.data)


async def delete_key(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    key_id = req.params["key_id"]
    reply = await c.call(req, "DELETE", f"/api/v1/keys/{key_id}", csrf=req.field("csrf_token"))
    if not reply.ok:
        raise c.fail(req, viewer, reply, back=f"/keys/{key_id}")
    key = reply.data
    label = f"{key['name']} ({key['prefix']})" if key.get("name") else key["prefix"]
    return c.flash("/keys", f"Deleted {label}. Requests using this key now fail.")
