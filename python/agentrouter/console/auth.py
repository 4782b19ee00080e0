"""Signing in and out: the forms of the accounts routes of ``/api/v1``."""

from __future__ import annotations

from agentrouter.console.app import Console
from agentrouter.console.http import Request, Response, redirect, safe_next

__all__ = ["signin", "signin_page", "signout"]


async def signin_page(c: Console, req: Request) -> Response:
    viewer = await c.viewer(req)
    next_path = safe_next(req.arg("next"))
    if viewer is not None:
        return redirect(next_path)
    return c.page(req, "signin.html", None, title="Sign in", next=next_path, values={}, errors={})


async def signin(c: Console, req: Request) -> Response:
    next_path = safe_next(req.field("next"))
    email = req.field("email")
    reply = await c.call(
        req, "POST", "/api/v1/auth/signin", body={"email": email, "password": req.form.get("password", [""])[0]}
    )
    if reply.ok:
        return redirect(next_path)
    errors = {"form": reply.message}
    if reply.status == 429 and reply.retry_after is not None:
        errors["form"] = f"{reply.message} Try again in {reply.retry_after} s."
    return c.page(
        req,
        "signin.html",
        None,
        title="Sign in",
        next=next_path,
        values={"email": email},
        errors=errors,
    )


async def signout(c: Console, req: Request) -> Response:
    await c.call(req, "POST", "/api/v1/auth/signout", csrf=req.field("csrf_token"))
    return redirect("/sign-in")
