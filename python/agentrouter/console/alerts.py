"""The alerts page: the unusual-usage alerts of the caller's keys, their evidence in
words, and acknowledging one (``/api/v1/alerts…``)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from agentrouter.console.app import Console
from agentrouter.console.http import Request, Response, safe_next
from agentrouter.console.render import number, time_tag

__all__ = ["acknowledge", "alert_list", "describe"]

STATUSES = {"open": "Open", "acknowledged": "Acknowledged", "all": "All"}
KINDS = {
    "volume_spike": "Volume spike",
    "unusual_hour": "Unusual hour",
    "failure_rate": "Failure rate",
    "new_ip": "New client address",
}


def _pct(value: Any) -> str:
    try:
        return f"{float(value) * 100:.0f}%"
    except (TypeError, ValueError):
        return "?"


def _n(value: Any) -> str:
    return number(value) if isinstance(value, int | float) else "?"


def describe(alert: dict[str, Any]) -> Markup:
    """The evidence of an alert as a sentence (the figures the detector saw)."""
    e = alert.get("evidence") or {}
    kind = alert.get("kind")
    when = time_tag(e["window_start"]) if isinstance(e.get("window_start"), int | float) else Markup("?")
    if kind == "volume_spike":
        return Markup(
            "{} requests in the hour from {}: {}× the key's typical busiest hour ({} requests, the median of "
            "its daily peaks over {} days); alerts start at {}."
        ).format(
            _n(e.get("requests")),
            when,
            _n(e.get("factor")),
            _n(e.get("baseline_typical_peak_hour")),
            _n(e.get("baseline_active_days")),
            _n(e.get("threshold")),
        )
    if kind == "unusual_hour":
        usual = e.get("usual_hours_utc") or []
        hours = ", ".join(f"{h:02d}:00" for h in usual if isinstance(h, int)) or "none"
        return Markup(
            "{} requests in the hour from {}, at {}:00 UTC, when the key is normally idle: it was used near "
            "this hour on {} of its {} active days. Its usual hours (UTC): {}."
        ).format(
            _n(e.get("requests")),
            when,
            f"{e.get('hour_of_day_utc', 0):02d}" if isinstance(e.get("hour_of_day_utc"), int) else "?",
            _n(e.get("days_used_near_this_hour")),
            _n(e.get("baseline_active_days")),
            hours,
        )
    if kind == "failure_rate":
        return Markup(
            "{} of {} requests failed in the hour from {} ({}: {} with a 4xx status, {} with a 5xx), against "
            "the key's usual {}; alerts start at {}."
        ).format(
            _n(e.get("failures")),
            _n(e.get("requests")),
            when,
            _pct(e.get("rate")),
            _n(e.get("failures_4xx")),
            _n(e.get("failures_5xx")),
            _pct(e.get("baseline_rate")),
            _pct(e.get("threshold")),
        )
    if kind == "new_ip":
        first = time_tag(e["first_seen"]) if isinstance(e.get("first_seen"), int | float) else Markup("?")
        return Markup(
            "Requests from {} (network {}), never seen for this key before: first at {}, {} requests so far. "
            "The key knew {} other networks."
        ).format(e.get("ip", "?"), e.get("network", "?"), first, _n(e.get("requests")), _n(e.get("known_networks")))
    return Markup("{}").format(str(e))


async def alert_list(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    status = req.arg("status", "open")
    if status not in STATUSES:
        status = "open"
    reply = await c.call(req, "GET", "/api/v1/alerts", query={"status": status, "limit": "200"})
    if not reply.ok:
        raise c.fail(req, viewer, reply)
    from agentrouter.console.keys import _all_keys

    keys = await _all_keys(c, req, [], {"include_deleted": "true"})
    names = {k["id"]: k for k in keys} if isinstance(keys, list) else {}
    alerts = [{**a, "text": describe(a), "key": names.get(a["key_id"])} for a in reply.data["data"]]
    return c.page(
        req,
        "alerts.html",
        viewer,
        nav="alerts",
        title="Alerts",
        alerts=alerts,
        status=status,
        statuses=STATUSES,
        kinds=KINDS,
    )


async def acknowledge(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    alert_id = req.params["alert_id"]
    back = safe_next(req.field("next"), "/alerts")
    reply = await c.call(req, "POST", f"/api/v1/alerts/{alert_id}/ack", csrf=req.field("csrf_token"))
    if not reply.ok:
        raise c.fail(req, viewer, reply, back=back)
    return c.flash(back, "Alert acknowledged.")
