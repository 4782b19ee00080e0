"""The web console as an ASGI app: every path outside ``/v1`` and ``/api``.

Pages are rendered on the server (``render``) from the answers of the management API,
called in-process on the browser's behalf (``client``): the console adds pages, not
a second backend. Forms post to console routes, which turn the fields into the API
request they stand for and render its answer: everything works without JavaScript
where a plain form can; the console's own scripts (``static/``) add copying, dialogs,
presets, in-place checks, local times and the charts.

A page that needs a signed-in user and gets 401 from the API sends the browser to
``/sign-in?next=<the page>``; signing in returns there. 404 from the API (another
user's key) is the console's 404.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from agentrouter.asgi import ASGIApp, Receive, Scope, Send
from agentrouter.config import Settings
from agentrouter.console.assets import IMMUTABLE, Assets
from agentrouter.console.client import ApiClient, ApiReply
from agentrouter.console.http import (
    MAX_FORM,
    Request,
    Response,
    html,
    parse_form,
    redirect,
    signin_url,
)
from agentrouter.console.render import Renderer
from agentrouter.request_body import BodyError, BodyReader

__all__ = ["Answer", "Console", "Viewer", "build_console"]

log = logging.getLogger("agentrouter.console")

STATIC = Path(__file__).with_name("static")
FLASH_COOKIE = "agentrouter_flash"

Handler = Callable[["Console", Request], Awaitable[Response]]


class Answer(Exception):
    """Raised by a handler to answer at once (a redirect to sign in, a 404 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Viewer:
    """Who is looking: the signed-in user (``GET /api/v1/me``), or a caller with a
    management key (``user`` None: the instance's operator)."""

    user: dict[str, Any] | None
    csrf: str | None = None

    @property
    def admin(self) -> bool:
        return self.user is None or self.user.get("role") == "admin"

    @property
    def name(self) -> str:
        if self.user is None:
            return "operator (management key)"
        return str(self.user.get("display_name") or self.user.get("email") or "")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_.~:-]+)", self.path)
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))


class Console:
    """The console app; ``api`` is the management API app it calls in-process."""

    def __init__(self, settings: Settings, api: ASGIApp) -> None:
        from agentrouter.console import routes

        self.settings = settings
        self.api = ApiClient(api)
        self.assets = Assets(STATIC)
        self.renderer = Renderer(self.assets)
        self._body = BodyReader(MAX_FORM, idle_timeout=settings.body_idle_timeout, total_timeout=settings.body_timeout)
        self.routes: list[Route] = [Route(m, p, h) for m, p, h in routes.ROUTES]

    async def startup(self, core: Any = None) -> None:
        """Nothing to open: the console holds no state of its own."""

    async def shutdown(self) -> None:
        self._body.close()

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        head = method == "HEAD"
        path: str = scope["path"]
        if path.startswith("/static/"):
            await self._static(scope, send, head)
            return
        route, params, allowed = self._match("GET" if head else method, path)
        try:
            if route is None:
                if allowed:
                    response = self.error_page(None, 405, "This page does not take that method.")
                    response.headers.append((b"allow", ", ".join(sorted(set(allowed))).encode()))
                else:
                    response = self.error_page(None, 404, "There is no page here.")
                await response.send(send, head=head)
                return
            form: dict[str, list[str]] | None = None
            if method == "POST":
                body = await self._body.read(receive, _header(scope, b"content-length"))
                form = parse_form(body)
            req = Request(scope, params, form)
            try:
                response = await route.handler(self, req)
            except Answer as answer:
                response = answer.response
            response.cookies = [*req.api_cookies, *response.cookies]
            if FLASH_COOKIE in req.cookies and response.status // 100 != 3:
                response.cookies.append(_clear_flash())
        except BodyError as exc:
            response = self.error_page(None, exc.status, str(exc))
            if exc.close:
                response.headers.append((b"connection", b"close"))
        except Exception:  # a page that fails is a 500 page, logged
            log.exception("console: %s %s failed", method, path)
            response = self.error_page(None, 500, "Something went wrong on the server; the error was logged.")
        await response.send(send, head=head)

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for route in self.routes:
            m = route.regex.match(path)
            if m is None:
                continue
            if route.method == method:
                return route, m.groupdict(), []
            allowed.append(route.method)
        return None, {}, allowed

    async def _static(self, scope: Scope, send: Send, head: bool) -> None:
        asset = self.assets.find(scope["path"])
        if asset is None or scope["method"] not in ("GET", "HEAD"):
            await Response(b"Not found.\n", 404, [(b"content-type", b"text/plain; charset=utf-8")]).send(send)
            return
        headers = [
            (b"content-type", asset.content_type),
            (b"cache-control", IMMUTABLE),
            (b"etag", asset.etag),
        ]
        if _header(scope, b"if-none-match") == asset.etag:
            await Response(b"", 304, headers).send(send, head=True)
            return
        await Response(asset.body, 200, headers).send(send, head=head)

    # -- helpers for the handlers ----------------------------------------------

    def page(
        self,
        req: Request | None,
        template: str,
        viewer: Viewer | None = None,
        http_status: int = 200,
        **ctx: Any,
    ) -> Response:
        flash = None
        if req is not None and FLASH_COOKIE in req.cookies:
            flash = unquote(req.cookies[FLASH_COOKIE])[:300]
        context = {
            "viewer": viewer,
            "csrf": viewer.csrf if viewer is not None else None,
            "flash": flash,
            "path": req.path if req is not None else "",
            "nav": ctx.pop("nav", ""),
            "title": ctx.pop("title", "AgentRouter"),
            **ctx,
        }
        return html(self.renderer.render(template, context), http_status)

    def error_page(self, viewer: Viewer | None, status: int, message: str, req: Request | None = None) -> Response:
        titles = {
            400: "Bad request",
            403: "Not allowed",
            404: "Not found",
            405: "Method not allowed",
            408: "Request timeout",
            413: "Too large",
            429: "Too many requests",
            500: "Server error",
            503: "Unavailable",
        }
        return self.page(
            req, "error.html", viewer, status, title=titles.get(status, "Error"), code=status, message=message
        )

    async def call(self, req: Request, method: str, path: str, **options: Any) -> ApiReply:
        return await self.api.call(req, method, path, **options)

    async def viewer(self, req: Request) -> Viewer | None:
        """Who is signed in (None: nobody): ``GET /api/v1/auth/session``, which gives the
        user and the session's CSRF token. A caller that sent a management key is that
        key's owner, or the instance's operator for an instance key."""
        reply = await self.call(req, "GET", "/api/v1/auth/session")
        if reply.ok and isinstance(reply.data, dict):
            user = reply.data.get("user")
            csrf = reply.data.get("csrf_token")
            return Viewer(user=user if isinstance(user, dict) else None, csrf=str(csrf) if csrf else None)
        if reply.status == 404 and req.header(b"authorization"):
            # A server without the account routes: a management key is the only way in.
            keys = await self.call(req, "GET", "/api/v1/keys", query={"limit": "1"})
            return Viewer(user=None) if keys.ok else None
        return None

    async def require_viewer(self, req: Request, *, admin: bool = False) -> Viewer:
        viewer = await self.viewer(req)
        if viewer is None:
            target = signin_url(req.full_path if req.method == "GET" else req.path)
            if any(c.startswith((b"agentrouter_session=;", b"__Host-agentrouter_session=;")) for c in req.api_cookies):
                target += "&ended=1"  # the API cleared a session cookie that no longer works
            raise Answer(redirect(target))
        if admin and not viewer.admin:
            raise Answer(self.error_page(viewer, 404, "There is no page here.", req))
        return viewer

    def fail(self, req: Request, viewer: Viewer | None, reply: ApiReply, *, back: str | None = None) -> Answer:
        """The answer to a failed API call outside a form: sign in again on 401, the
        console's 404, or an error page with the API's message."""
        if reply.status == 401:
            target = signin_url(back or (req.full_path if req.method == "GET" else req.path))
            if reply.code == "session_ended":
                target += "&ended=1"  # the sign-in page says why
            return Answer(redirect(target))
        message = reply.message
        if reply.status == 429 and reply.retry_after is not None:
            message += f" Try again in {reply.retry_after} s."
        status = reply.status if reply.status >= 400 else 500
        return Answer(self.error_page(viewer, status, message, req))

    def flash(self, location: str, message: str) -> Response:
        """A redirect that shows ``message`` on the next page (once)."""
        cookie = f"{FLASH_COOKIE}={quote(message[:300])}; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        return redirect(location, [cookie.encode("latin-1")])


def _clear_flash() -> bytes:
    return f"{FLASH_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict".encode()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def build_console(settings: Settings, api: ASGIApp) -> Console:
    return Console(settings, api)
