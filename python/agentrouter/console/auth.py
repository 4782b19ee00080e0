"""Signing in and everything before it: sign in (password, then the two-factor step
when it is on; GitHub and Google when configured), sign out, register, verify an
email address, reset a password, and the first admin's setup. Each form is the body
of one public account route of ``/api/v1/auth/…``.

The links in mails lead here (``accounts.service``: ``/verify-email``,
``/reset-password``, ``/register``, ``/setup``, each with ``?token=``). Opening one
changes nothing by itself — mail scanners open links too — the page asks for the
click (and the password) that posts the token.

The token leaves the address bar at once: the link's answer is a redirect to the same
path without it (sent with ``Referrer-Policy: no-referrer``), keeping the token in a
short-lived ``HttpOnly`` cookie for that page (``SameSite=Lax``: it must arrive with
the navigation that started in a mail program). So it is not in the browser's
history nor in a ``Referer``, and the page can keep the console's usual
``Referrer-Policy: same-origin`` — under ``no-referrer`` a browser sends
``Origin: null`` with the form post, which the API's same-origin check rightly
refuses.
"""

from __future__ import annotations

import time
from typing import Any

from agentrouter.console.app import Console
from agentrouter.console.client import ApiReply
from agentrouter.console.http import NO_REFERRER, Request, Response, redirect, safe_next

__all__ = [
    "OAUTH_ERRORS",
    "oauth_error",
    "register",
    "register_page",
    "resend",
    "reset",
    "reset_page",
    "setup",
    "setup_page",
    "signin",
    "signin_page",
    "signout",
    "two_factor",
    "two_factor_page",
    "verify",
    "verify_page",
]

PROVIDER_NAMES = {"github": "GitHub", "google": "Google"}
LINK_COOKIE = "agentrouter_link"
LINK_LIFETIME = 3600
"""Seconds a link's token waits in its cookie for the page's form (the API decides
how long the token itself is valid)."""


def _link_cookie_name(c: Console, req: Request) -> str:
    name = f"{LINK_COOKIE}{req.path.replace('/', '_').replace('-', '_')}"
    return ("__Host-" + name) if c.settings.https else name


def _link_cookie(c: Console, req: Request, token: str, max_age: int) -> bytes:
    secure = "; Secure" if c.settings.https else ""
    return f"{_link_cookie_name(c, req)}={token}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}".encode(
        "latin-1"
    )


def _token_out_of_the_url(c: Console, req: Request) -> Response | None:
    """For a link with ``?token=``: the redirect to the same page without it, the
    token in the page's cookie. None when the URL holds no token."""
    token = req.arg("token")
    if not token:
        return None
    if len(token) > 256 or not token.replace("-", "").replace("_", "").isalnum():
        token = ""
    response = redirect(req.path, [_link_cookie(c, req, token, LINK_LIFETIME)])
    response.headers.append(NO_REFERRER)
    return response


def _link_token(c: Console, req: Request) -> str:
    """The token of the link this page was opened with (its cookie), or a form's."""
    return req.field("token") or req.cookies.get(_link_cookie_name(c, req), "")


def _used(c: Console, req: Request) -> bytes:
    """``Set-Cookie`` that forgets the page's link token (it was used)."""
    return _link_cookie(c, req, "", 0)


async def sign_in_methods(c: Console, req: Request) -> dict[str, Any]:
    """``GET /api/v1/auth/providers``: password, the OAuth providers configured, the
    registration mode, whether the first admin is still to be set up."""
    reply = await c.call(req, "GET", "/api/v1/auth/providers")
    data = reply.data if reply.ok and isinstance(reply.data, dict) else {}
    return {
        "providers": [(p, PROVIDER_NAMES.get(p, p)) for p in data.get("providers", [])],
        "registration": data.get("registration", "invite"),
        "setup_required": bool(data.get("setup_required", False)),
    }


OAUTH_ERRORS: dict[str, str] = {
    "state": "This sign-in with {provider} was not started in this browser, or took too long: start it again.",
    "denied": "Sign-in with {provider} was cancelled.",
    "provider_error": "{provider} refused the sign-in: start it again.",
    "provider_unavailable": "{provider} could not be reached or answered something unexpected: try again later.",
    "not_configured": "Sign-in with {provider} is not configured on this server.",
    "code": "{provider} refused the sign-in (its code was used already or did not match): start it again.",
    "id_token": "{provider}'s proof of who signed in was refused: start the sign-in again.",
    "unverified_email": "Your {provider} account has no verified email address: verify one with {provider} "
    "and try again.",
    "link_signed_out": "The account that started linking {provider} is not signed in here any more: sign in "
    "and link again.",
    "identity_not_linked": "An account with this {provider} email address exists, but its address is not verified "
    "yet: sign in with your password, verify the address, then link {provider} from your account settings.",
    "identity_conflict": "This {provider} account is linked to another AgentRouter account already.",
    "account_disabled": "This account is disabled; ask an admin.",
    "registration_closed": "Registration is not open to this address: ask an admin for an invitation.",
    "too_many_attempts": "Too many sign-in attempts: wait a little and try again.",
    "busy": "The server is busy: try again in a moment.",
    "account_error": "Sign-in with {provider} was refused: start it again.",
}
"""The words for the ``oauth_error`` code that a refused GitHub or Google callback
brings back to the sign-in page (or the account page, when linking); the API's
``OAUTH_ERROR_CODES`` (``tests/test_console.py`` checks both name the same codes)."""


def oauth_error(req: Request) -> str | None:
    """The message for the page's ``?oauth_error=`` (None when there is none); an
    unknown code gets the general message, never its own text."""
    code = req.arg("oauth_error")
    if not code:
        return None
    provider = PROVIDER_NAMES.get(req.arg("provider") or "", "the provider")
    message = OAUTH_ERRORS.get(code, OAUTH_ERRORS["account_error"]).replace("{provider}", provider)
    return message[0].upper() + message[1:]


def field_errors(reply: ApiReply, fields: tuple[str, ...]) -> dict[str, str]:
    """The API's error next to the form's input of the same name, else over the form;
    a throttled attempt says when to try again."""
    message = reply.message
    retry = reply.retry_after
    if reply.status == 429 and retry is not None:
        at = time.strftime("%H:%M:%S", time.gmtime(time.time() + retry))
        message = f"{message} Try again in {retry} s (at {at} UTC)."
    field = reply.field
    if field in fields:
        return {field: message}
    return {"form": message}


def _throttle(reply: ApiReply) -> dict[str, Any]:
    if reply.status == 429 and reply.retry_after is not None:
        return {"retry_at": time.time() + reply.retry_after, "retry_after": reply.retry_after}
    return {}


# -- sign in ------------------------------------------------------------------------


async def _signin_form(
    c: Console, req: Request, next_path: str, values: dict[str, str], errors: dict[str, str], **extra: Any
) -> Response:
    methods = await sign_in_methods(c, req)
    return c.page(
        req, "signin.html", None, title="Sign in", next=next_path, values=values, errors=errors, **methods, **extra
    )


async def signin_page(c: Console, req: Request) -> Response:
    next_path = safe_next(req.arg("next"))
    if await c.viewer(req) is not None:
        return redirect(next_path)
    errors = {}
    if req.arg("ended"):
        errors["form"] = "Your session has ended or expired: sign in again to go on."
    refused = oauth_error(req)
    if refused is not None:
        errors["form"] = refused
    return await _signin_form(c, req, next_path, {}, errors)


async def signin(c: Console, req: Request) -> Response:
    next_path = safe_next(req.field("next"))
    email = req.field("email")
    body = {"email": email, "password": req.form.get("password", [""])[0]}
    reply = await c.call(req, "POST", "/api/v1/auth/signin", body=body)
    if reply.ok and reply.data.get("status") == "two_factor_required":
        return _two_factor_form(c, req, next_path, str(reply.data.get("two_factor_token") or ""), {})
    if reply.ok:
        return redirect(next_path)
    return await _signin_form(
        c, req, next_path, {"email": email}, field_errors(reply, ("email", "password")), **_throttle(reply)
    )


def _two_factor_form(c: Console, req: Request, next_path: str, token: str, errors: dict[str, str]) -> Response:
    return c.page(req, "two_factor.html", None, title="Two-factor sign-in", next=next_path, token=token, errors=errors)


async def two_factor_page(c: Console, req: Request) -> Response:
    """Where an OAuth sign-in that needs a code lands (its pending sign-in is a cookie)."""
    return _two_factor_form(c, req, safe_next(req.arg("next")), "", {})


async def two_factor(c: Console, req: Request) -> Response:
    next_path = safe_next(req.field("next"))
    token = req.field("two_factor_token")
    body: dict[str, Any] = {"code": req.field("code").replace(" ", "")}
    if token:
        body["two_factor_token"] = token
    reply = await c.call(req, "POST", "/api/v1/auth/signin/two-factor", body=body)
    if reply.ok and reply.data.get("status") == "signed_in":
        return redirect(next_path)
    errors = field_errors(reply, ("code",)) if not reply.ok else {"form": "Sign in again."}
    if reply.field == "two_factor_token" or reply.code == "invalid_token":
        errors = {"form": "This sign-in took too long; sign in again."}
    return _two_factor_form(c, req, next_path, token, errors)


async def signout(c: Console, req: Request) -> Response:
    reply = await c.call(req, "POST", "/api/v1/auth/signout", csrf=req.field("csrf_token"))
    if not reply.ok and reply.status != 401:  # refused (a stale form's CSRF token): still signed in
        raise c.fail(req, await c.viewer(req), reply)
    return c.flash("/sign-in", "Signed out.")


# -- register, verify ---------------------------------------------------------------


async def _register_form(
    c: Console, req: Request, token: str, values: dict[str, str], errors: dict[str, str], **extra: Any
) -> Response:
    methods = await sign_in_methods(c, req)
    invitation = None
    if token:
        checked = await c.call(req, "POST", "/api/v1/auth/invitation", body={"token": token})
        if checked.ok:
            invitation = checked.data
            if invitation.get("email") and not values.get("email"):
                values = {**values, "email": invitation["email"]}
        else:
            errors = {"form": checked.message, **errors}
    return c.page(
        req,
        "register.html",
        None,
        title="Create your account",
        token=token,
        invitation=invitation,
        values=values,
        errors=errors,
        **methods,
        **extra,
    )


async def register_page(c: Console, req: Request) -> Response:
    moved = _token_out_of_the_url(c, req)
    if moved is not None:
        return moved
    return await _register_form(c, req, _link_token(c, req), {}, {})


async def register(c: Console, req: Request) -> Response:
    token = _link_token(c, req)
    values = {"email": req.field("email"), "display_name": req.field("display_name")}
    body: dict[str, Any] = {"email": values["email"], "password": req.form.get("password", [""])[0]}
    if values["display_name"]:
        body["display_name"] = values["display_name"]
    if token:
        body["invitation"] = token
    reply = await c.call(req, "POST", "/api/v1/auth/register", body=body)
    if reply.ok:
        page = c.page(
            req,
            "notice.html",
            None,
            title="Check your mail",
            message=reply.data.get("message", ""),
            next_steps="Then sign in. Until your address is verified you can sign in, but not create keys.",
        )
        page.cookies.append(_used(c, req))
        return page
    errors = field_errors(reply, ("email", "password", "display_name"))
    if reply.field == "invitation":
        errors = {"form": reply.message}
    return await _register_form(c, req, token, values, errors, **_throttle(reply))


async def verify_page(c: Console, req: Request) -> Response:
    moved = _token_out_of_the_url(c, req)
    if moved is not None:
        return moved
    return c.page(req, "verify.html", None, title="Verify your email address", token=_link_token(c, req), errors={})


async def verify(c: Console, req: Request) -> Response:
    token = _link_token(c, req)
    reply = await c.call(req, "POST", "/api/v1/auth/verify", body={"token": token})
    if reply.ok:
        viewer = await c.viewer(req)
        done = c.flash("/keys" if viewer is not None else "/sign-in", reply.data.get("message", "Verified."))
        done.cookies.append(_used(c, req))
        return done
    return c.page(
        req, "verify.html", None, title="Verify your email address", token=token, errors={"form": reply.message}
    )


async def resend(c: Console, req: Request) -> Response:
    """A new verification link to the signed-in user's own address."""
    reply = await c.call(req, "POST", "/api/v1/auth/verify/resend", body={}, csrf=req.field("csrf_token"))
    back = safe_next(req.field("next"))
    if reply.status == 401:
        raise c.fail(req, None, reply, back=back)
    return c.flash(back, reply.message if not reply.ok else reply.data.get("message", "Sent."))


# -- reset ---------------------------------------------------------------------------


async def reset_page(c: Console, req: Request) -> Response:
    moved = _token_out_of_the_url(c, req)
    if moved is not None:
        return moved
    token = _link_token(c, req)
    return c.page(req, "reset.html", None, title="Reset your password", token=token, values={}, errors={})


async def reset(c: Console, req: Request) -> Response:
    token = _link_token(c, req)
    if not token:
        email = req.field("email")
        reply = await c.call(req, "POST", "/api/v1/auth/password/reset", body={"email": email})
        if reply.ok:
            return c.page(
                req,
                "notice.html",
                None,
                title="Check your mail",
                message=reply.data.get("message", ""),
                next_steps="The link works once, for a short while.",
            )
        return c.page(
            req,
            "reset.html",
            None,
            title="Reset your password",
            token="",
            values={"email": email},
            errors=field_errors(reply, ("email",)),
            **_throttle(reply),
        )
    body = {"token": token, "password": req.form.get("password", [""])[0]}
    reply = await c.call(req, "POST", "/api/v1/auth/password/reset/confirm", body=body)
    if reply.ok:
        done = c.flash("/sign-in", reply.data.get("message", "Your password is set."))
        done.cookies.append(_used(c, req))
        return done
    errors = field_errors(reply, ("password",))
    if reply.field == "token" or reply.code == "invalid_token":
        errors = {"form": reply.message}
    return c.page(req, "reset.html", None, title="Reset your password", token=token, values={}, errors=errors)


# -- the first admin ----------------------------------------------------------------


async def setup_page(c: Console, req: Request) -> Response:
    moved = _token_out_of_the_url(c, req)
    if moved is not None:
        return moved
    return c.page(
        req,
        "setup.html",
        None,
        title="Create the first admin account",
        token=_link_token(c, req),
        values={},
        errors={},
    )


async def setup(c: Console, req: Request) -> Response:
    token = _link_token(c, req)
    values = {"email": req.field("email"), "display_name": req.field("display_name")}
    body: dict[str, Any] = {"token": token, "email": values["email"], "password": req.form.get("password", [""])[0]}
    if values["display_name"]:
        body["display_name"] = values["display_name"]
    reply = await c.call(req, "POST", "/api/v1/auth/setup", body=body)
    if reply.ok:
        done = c.flash("/keys", "Welcome! Your admin account is ready. Create a key to start.")
        done.cookies.append(_used(c, req))
        return done
    errors = field_errors(reply, ("email", "password", "display_name"))
    if reply.field == "token" or reply.code == "invalid_token":
        errors = {"form": reply.message}
    return c.page(
        req,
        "setup.html",
        None,
        title="Create the first admin account",
        token=token,
        values=values,
        errors=errors,
    )
