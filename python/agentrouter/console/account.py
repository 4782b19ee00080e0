"""The signed-in person's own pages: devices (sessions) and account (name, password,
linked GitHub/Google accounts, two-factor sign-in, their audit events). Each form is
one route of ``/api/v1/me…``."""

from __future__ import annotations

import base64
from typing import Any

from agentrouter.console.app import Console, Viewer
from agentrouter.console.auth import PROVIDER_NAMES, field_errors, oauth_error, sign_in_methods
from agentrouter.console.http import Request, Response

__all__ = [
    "account_page",
    "change_password",
    "devices_page",
    "end_all",
    "end_others",
    "end_session",
    "link_identity",
    "totp_confirm",
    "totp_disable",
    "totp_recovery_codes",
    "totp_start",
    "unlink_identity",
    "update_profile",
]

EVENTS = {
    "sign_in": "Signed in",
    "sign_in_failed": "Sign-in failed",
    "sign_out": "Signed out",
    "session_ended": "Session ended",
    "password_changed": "Password changed",
    "password_reset": "Password reset",
    "totp_enabled": "Two-factor sign-in on",
    "totp_disabled": "Two-factor sign-in off",
    "identity_linked": "Account linked",
    "identity_unlinked": "Account unlinked",
    "key_created": "Key created",
    "key_updated": "Key changed",
    "key_rotated": "Key rotated",
    "key_deleted": "Key deleted",
    "email_verified": "Email verified",
    "recovery_codes_renewed": "New recovery codes",
    "invitation_created": "Invitation created",
    "user_created": "Account created",
    "user_deleted": "Account deleted",
    "user_disabled": "Account disabled",
    "user_enabled": "Account enabled",
    "role_changed": "Role changed",
}


# -- devices ---------------------------------------------------------------------------


async def devices_page(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    reply = await c.call(req, "GET", "/api/v1/me/sessions")
    if not reply.ok:
        raise c.fail(req, viewer, reply)
    sessions = sorted(reply.data["data"], key=lambda s: (not s["current"], -s["last_seen_at"]))
    return c.page(req, "devices.html", viewer, nav="devices", title="Devices", sessions=sessions)


async def end_session(c: Console, req: Request) -> Response:
    await c.require_viewer(req)
    reply = await c.call(req, "DELETE", f"/api/v1/me/sessions/{req.params['session_id']}", csrf=req.field("csrf_token"))
    return _after_ending(c, req, reply, "That device is signed out.")


async def end_others(c: Console, req: Request) -> Response:
    await c.require_viewer(req)
    reply = await c.call(req, "POST", "/api/v1/me/sessions/end-others", csrf=req.field("csrf_token"))
    return _after_ending(c, req, reply, "Every other device is signed out.")


async def end_all(c: Console, req: Request) -> Response:
    await c.require_viewer(req)
    reply = await c.call(req, "POST", "/api/v1/me/sessions/end-all", csrf=req.field("csrf_token"))
    return _after_ending(c, req, reply, "Every device is signed out, this one too.")


def _after_ending(c: Console, req: Request, reply: Any, message: str) -> Response:
    if not reply.ok:
        raise c.fail(req, None, reply, back="/devices")
    if reply.data.get("current_ended"):
        return c.flash("/sign-in", message)
    ended = reply.data.get("ended", 0)
    return c.flash("/devices", f"{message} ({ended} session{'' if ended == 1 else 's'} ended.)")


# -- account -----------------------------------------------------------------------------


def _qr_data_uri(svg: str) -> str:
    """The API's QR code (an SVG document) as a ``data:`` image (``img-src data:``)."""
    if "xmlns=" not in svg[:200]:
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


async def _account(
    c: Console, req: Request, viewer: Viewer, *, errors: dict[str, str] | None = None, **extra: Any
) -> Response:
    me = await c.call(req, "GET", "/api/v1/me")
    if not me.ok:
        raise c.fail(req, viewer, me, back="/account")
    identities = await c.call(req, "GET", "/api/v1/me/identities")
    audit = await c.call(req, "GET", "/api/v1/audit", query={"limit": "50"})
    methods = await sign_in_methods(c, req)
    linked = identities.data["data"] if identities.ok else []
    linked_providers = {i["provider"] for i in linked}
    return c.page(
        req,
        "account.html",
        viewer,
        nav="account",
        title="Account",
        me=me.data,
        identities=linked,
        linkable=[(p, name) for p, name in methods["providers"] if p not in linked_providers],
        provider_names=PROVIDER_NAMES,
        events=audit.data["data"] if audit.ok else [],
        event_names=EVENTS,
        errors=errors or {},
        **extra,
    )


async def account_page(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    refused = oauth_error(req)  # a link refused at the callback comes back here
    return await _account(c, req, viewer, errors={"identities": refused} if refused else None)


async def update_profile(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    name = req.field("display_name")
    reply = await c.call(req, "PATCH", "/api/v1/me", body={"display_name": name or None}, csrf=req.field("csrf_token"))
    if reply.ok:
        return c.flash("/account", "Your name is saved.")
    if reply.status == 401:
        raise c.fail(req, viewer, reply, back="/account")
    return await _account(c, req, viewer, errors=field_errors(reply, ("display_name",)))


async def change_password(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    body: dict[str, Any] = {
        "new_password": req.form.get("new_password", [""])[0],
        "end_other_sessions": req.field("end_other_sessions") == "on",
    }
    current = req.form.get("current_password", [""])[0]
    if current:
        body["current_password"] = current
    reply = await c.call(req, "POST", "/api/v1/me/password", body=body, csrf=req.field("csrf_token"))
    if reply.ok:
        ended = reply.data.get("ended", 0)
        extra = f" {ended} other device{'' if ended == 1 else 's'} signed out." if body["end_other_sessions"] else ""
        return c.flash("/account", "Your password is changed." + extra)
    if reply.status == 401 and reply.field is None:
        raise c.fail(req, viewer, reply, back="/account")
    errors = field_errors(reply, ("current_password", "new_password"))
    return await _account(c, req, viewer, errors=errors)


async def link_identity(c: Console, req: Request) -> Response:
    """Linking starts at the provider: the API gives its URL (and sets the state
    cookie). A form post cannot be redirected to another site under this CSP
    (``form-action 'self'``), so the page says where it goes next and the script
    follows the link (without a script, one more click)."""
    viewer = await c.require_viewer(req)
    provider = req.params["provider"]
    reply = await c.call(
        req, "POST", f"/api/v1/me/identities/{provider}/link", query={"next": "/account"}, csrf=req.field("csrf_token")
    )
    if not reply.ok:
        if reply.status == 401:
            raise c.fail(req, viewer, reply, back="/account")
        return await _account(c, req, viewer, errors={"identities": reply.message})
    return c.page(
        req,
        "continue.html",
        viewer,
        nav="account",
        title=f"Link {PROVIDER_NAMES.get(provider, provider)}",
        url=reply.data["authorize_url"],
        provider=PROVIDER_NAMES.get(provider, provider),
    )


async def unlink_identity(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    identity = req.params["identity_id"]
    reply = await c.call(req, "DELETE", f"/api/v1/me/identities/{identity}", csrf=req.field("csrf_token"))
    if reply.ok:
        return c.flash("/account", reply.data.get("message", "Unlinked."))
    if reply.status == 401:
        raise c.fail(req, viewer, reply, back="/account")
    return await _account(c, req, viewer, errors={"identities": reply.message})


async def totp_start(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    reply = await c.call(req, "POST", "/api/v1/me/totp", csrf=req.field("csrf_token"))
    if not reply.ok:
        if reply.status == 401:
            raise c.fail(req, viewer, reply, back="/account")
        return await _account(c, req, viewer, errors={"totp": reply.message})
    return _enrol_page(c, req, viewer, reply.data, {})


def _enrol_page(
    c: Console, req: Request, viewer: Viewer, enrolment: dict[str, Any], errors: dict[str, str]
) -> Response:
    return c.page(
        req,
        "totp_enrol.html",
        viewer,
        nav="account",
        title="Turn on two-factor sign-in",
        secret=enrolment.get("secret", ""),
        uri=enrolment.get("otpauth_uri", ""),
        qr=_qr_data_uri(enrolment["qr_svg"]) if enrolment.get("qr_svg") else "",
        errors=errors,
    )


async def totp_confirm(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    reply = await c.call(
        req,
        "POST",
        "/api/v1/me/totp/confirm",
        body={"code": req.field("code").replace(" ", "")},
        csrf=req.field("csrf_token"),
    )
    if reply.ok:
        return _codes_page(c, req, viewer, reply.data["recovery_codes"], "Two-factor sign-in is on")
    if reply.status == 401 and reply.code != "invalid_second_factor":
        raise c.fail(req, viewer, reply, back="/account")
    enrolment = {"secret": req.field("secret"), "otpauth_uri": req.field("uri")}
    page = _enrol_page(c, req, viewer, enrolment, field_errors(reply, ("code",)))
    return page


def _codes_page(c: Console, req: Request, viewer: Viewer, codes: list[str], title: str) -> Response:
    return c.page(req, "recovery_codes.html", viewer, nav="account", title=title, codes=codes)


async def totp_disable(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    reply = await c.call(
        req,
        "POST",
        "/api/v1/me/totp/disable",
        body={"code": req.field("disable_code").replace(" ", "")},
        csrf=req.field("csrf_token"),
    )
    if reply.ok:
        return c.flash("/account", "Two-factor sign-in is off.")
    if reply.status == 401 and reply.code != "invalid_second_factor":
        raise c.fail(req, viewer, reply, back="/account")
    return await _account(c, req, viewer, errors={"disable_code": reply.message})


async def totp_recovery_codes(c: Console, req: Request) -> Response:
    viewer = await c.require_viewer(req)
    reply = await c.call(
        req,
        "POST",
        "/api/v1/me/totp/recovery-codes",
        body={"code": req.field("renew_code").replace(" ", "")},
        csrf=req.field("csrf_token"),
    )
    if reply.ok:
        return _codes_page(c, req, viewer, reply.data["recovery_codes"], "New recovery codes")
    if reply.status == 401 and reply.code != "invalid_second_factor":
        raise c.fail(req, viewer, reply, back="/account")
    return await _account(c, req, viewer, errors={"renew_code": reply.message})
