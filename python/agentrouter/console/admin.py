"""The admin pages: people (invite, disable or enable, role), the instance keys (no
owner) and the usage of every key. Members get the console's 404 here, as the API
gives them 404 or 403 (``/api/v1/users``, ``/api/v1/invitations``)."""

from __future__ import annotations

from typing import Any

from agentrouter.console.app import Console, Viewer
from agentrouter.console.auth import field_errors
from agentrouter.console.http import Request, Response
from agentrouter.console.keys import BUCKETS, RANGES, _all_keys, _charts

__all__ = ["admin_page", "create_invitation", "revoke_invitation", "update_user"]


async def users_by_id(c: Console, req: Request) -> dict[str, dict[str, Any]]:
    """Every user (admins only; empty for anyone else), by id."""
    out: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(50):
        reply = await c.call(req, "GET", "/api/v1/users", query={"limit": "200", "cursor": cursor})
        if not reply.ok:
            return out
        out.update({u["id"]: u for u in reply.data["data"]})
        cursor = reply.data.get("next_cursor")
        if not reply.data.get("has_more") or not cursor:
            break
    return out


async def _admin(
    c: Console,
    req: Request,
    viewer: Viewer,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    created: dict[str, Any] | None = None,
) -> Response:
    users = await c.call(req, "GET", "/api/v1/users", query={"limit": "200"})
    if users.status in (403, 404):
        raise c.fail(req, viewer, users)  # a member: the console's 404 (see below)
    if not users.ok:
        raise c.fail(req, viewer, users, back="/admin")
    invitations = await c.call(req, "GET", "/api/v1/invitations")
    keys = await _all_keys(c, req, [])
    instance_keys = [k for k in keys if k.get("owner") is None] if isinstance(keys, list) else []
    range_name = req.arg("range", "7d")
    if range_name not in RANGES:
        range_name = "7d"
    _, since, by = RANGES[range_name]
    usage = await c.call(req, "GET", "/api/v1/usage", query={"since": since, "by": by})
    report = usage.data if usage.ok else None
    open_invitations = [i for i in (invitations.data["data"] if invitations.ok else []) if i.get("used_at") is None]
    return c.page(
        req,
        "admin.html",
        viewer,
        nav="admin",
        title="Admin",
        users=users.data["data"],
        invitations=open_invitations,
        instance_keys=instance_keys,
        report=report,
        charts=_charts(report) if report else [],
        ranges=RANGES,
        range_name=range_name,
        buckets=BUCKETS,
        errors=errors or {},
        values=values or {},
        created=created,
    )


async def admin_page(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req, admin=True)
    return await _admin(c, req, viewer)


async def create_invitation(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req, admin=True)
    email = req.field("email")
    role = req.field("role", "member")
    body: dict[str, Any] = {"role": role}
    if email:
        body["email"] = email
    reply = await c.call(req, "POST", "/api/v1/invitations", body=body, csrf=req.field("csrf_token"))
    if reply.ok:
        return await _admin(c, req, viewer, created=reply.data)
    if reply.status == 401:
        raise c.fail(req, viewer, reply, back="/admin")
    return await _admin(c, req, viewer, errors=field_errors(reply, ("email", "role")), values={"email": email})


async def revoke_invitation(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req, admin=True)
    reply = await c.call(
        req, "DELETE", f"/api/v1/invitations/{req.params['invitation_id']}", csrf=req.field("csrf_token")
    )
    if not reply.ok:
        raise c.fail(req, viewer, reply, back="/admin")
    return c.flash("/admin", "The invitation is revoked.")


async def update_user(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req, admin=True)
    user_id = req.params["user_id"]
    body: dict[str, Any] = {}
    action = req.field("action")
    if action == "disable":
        body["disabled"] = True
    elif action == "enable":
        body["disabled"] = False
    elif action == "role":
        body["role"] = req.field("role")
    reply = await c.call(req, "PATCH", f"/api/v1/users/{user_id}", body=body, csrf=req.field("csrf_token"))
    if reply.ok:
        user = reply.data
        what = {
            "disable": "is disabled: their sessions ended and their keys stopped working",
            "enable": "is enabled again",
            "role": f"is now {user.get('role')}",
        }.get(action, "is saved")
        return c.flash("/admin", f"{user.get('email')} {what}.")
    if reply.status in (401, 404):
        raise c.fail(req, viewer, reply, back="/admin")
    return await _admin(c, req, viewer, errors={f"user-{user_id}": reply.message})
