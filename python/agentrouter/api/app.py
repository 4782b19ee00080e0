"""The management API as an ASGI app: everything under ``/api``.

``build_api(core, settings=...)`` returns a ``ManagementApi``. Two ways to run it:

* **Mounted** in the gateway (one app per worker): the gateway passes it every
  request outside ``/v1`` and calls ``await api.startup(core)`` after opening its
  core in its lifespan startup and ``await api.shutdown()`` in its shutdown. The API
  then shares the worker's core (store connection, limiter region, digester).
* **On its own** (``agentrouter.api.devserver:app`` under Granian, and the tests):
  it answers ASGI ``lifespan`` itself, opening a core on the settings' data
  directory when it was built without one.

Its settings (the request log's retention, the webhook, the monitor's interval and
thresholds) are the server's ``Settings``, passed in; built without them, it loads
them once with ``load_settings()`` (``AGENTROUTER_CONFIG`` and ``AGENTROUTER_*``).

``startup`` also starts the monitor's task (one per process; the lease in the store
makes only one process do the work): it prunes the request log past its retention
and runs the unusual-usage detectors. ``shutdown`` stops and awaits it.

Public (no key): ``GET /api/openapi.json`` (the OpenAPI 3.1 document of v1),
``GET /api/docs`` (a readable reference page built from it), and ``OPTIONS`` on any
operation's path (204 with ``Allow``, or a CORS preflight's answer for an allowed
origin). Everything else under ``/api/v1`` needs a management key, checked by the
process's one key authenticator (``agentrouter.auth``, the same as ``/v1``: the same
header rules, refusals, messages and rate-limit headers). ``HEAD`` on a ``GET``
operation answers like ``GET`` without the body.

Every failure becomes the one error body in one place (``api_error``): the project's
own errors by their kind (bad input 422, unknown id 404, conflict 409, the body's
limits 400/408/413, the store or limiter failing 503), anything else 500.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from agentrouter.accounts.errors import AccountDisabled, AccountError, Busy, Throttled
from agentrouter.actor import instance_actor
from agentrouter.api.caller import Caller
from agentrouter.api.docs import docs_html
from agentrouter.api.errors import ApiError, store_unavailable
from agentrouter.api.openapi import openapi_json
from agentrouter.api.routes import Context, Request
from agentrouter.api.table import match
from agentrouter.api.web import (
    CSRF_HEADER,
    SAFE_METHODS,
    csrf_matches,
    origin_of,
    read_cookies,
    request_origins,
    same_origin_refusal,
)
from agentrouter.asgi import Receive, Scope, Send, run_lifespan
from agentrouter.auth import MANAGE_SCOPE, key_headers, rate_limit_headers
from agentrouter.config import Settings, load_settings
from agentrouter.core import Core
from agentrouter.cors import cors_policy
from agentrouter.errors import AgentRouterError
from agentrouter.keys import EmailNotVerified, KeyConflict, KeyInputError, KeyNotFound
from agentrouter.limits.base import Decision
from agentrouter.monitor.runner import Monitor
from agentrouter.request_body import BodyError, BodyReader
from agentrouter.store import StoreError, StoreUnavailable
from agentrouter.store.analytics import UsageQueryError

__all__ = ["MAX_BODY", "ManagementApi", "build_api"]

log = logging.getLogger("agentrouter.api")

CoreOpener = Callable[[Settings], Awaitable[Core]]

MAX_BODY = 1024 * 1024
PREFIX = "/api"
_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_CLOSE = (b"connection", b"close")
_WWW_AUTH = (b"www-authenticate", b'Bearer realm="agentrouter-api"')
_NO_REFERRER = (b"referrer-policy", b"no-referrer")
_NO_CREDENTIALS = (
    "Missing API key. Send a management key as 'Authorization: Bearer sk-ar-...' or as 'x-api-key: sk-ar-...', "
    "or sign in (POST /api/v1/auth/signin) for a session cookie."
)
_encode = msgspec.json.Encoder().encode


class ManagementApi:
    """The ASGI callable for ``/api``; see the module docstring."""

    def __init__(
        self,
        core: Core | None = None,
        *,
        settings: Settings | None = None,
        open_core: CoreOpener | None = None,
        run_monitor: bool = True,
    ) -> None:
        self.core = core
        self.settings = settings if settings is not None else load_settings()
        self._open_core = open_core
        self._owns_core = False
        self._run_monitor = run_monitor
        self.monitor: Monitor | None = None
        self._ctx: Context | None = None
        self._body = BodyReader(
            MAX_BODY, idle_timeout=self.settings.body_idle_timeout, total_timeout=self.settings.body_timeout
        )
        self._cors = cors_policy(self.settings.cors_allow_origins)
        self._public_origin = origin_of(self.settings.base_url) if self.settings.public_url else None
        if core is not None:
            self._bind(core)

    def _bind(self, core: Core) -> None:
        self.core = core
        self._ctx = Context(core, self.settings)

    # -- lifecycle -------------------------------------------------------------

    async def startup(self, core: Core | None = None) -> None:
        """Bind to ``core`` (or open one) and start the monitor task."""
        if core is not None:
            self._bind(core)
        elif self.core is None:
            opener = self._open_core or _open_core
            core = await opener(self.settings)
            self._bind(core)
            self._owns_core = True
            core.follow_changes()  # a shared limiter's key-change feed (no-op without one)
        assert self.core is not None
        if self._run_monitor and self.monitor is None:
            self.monitor = Monitor(self.core.store, self.settings, clock=self.core.now)
            self.monitor.start()

    async def shutdown(self) -> None:
        """Stop and await the monitor task; close the core if this app opened it."""
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            await monitor.stop()
        self._body.close()
        if self._owns_core and self.core is not None:
            await self.core.close()
            self.core = None
            self._owns_core = False

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown, log=log, name="management API")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        head = method == "HEAD"
        if path in ("/api/openapi.json", "/api/v1/openapi.json"):
            if method not in ("GET", "HEAD"):
                await _send_error(send, _method_not_allowed(["GET"]))
                return
            await _send(send, 200, openapi_json(), [_JSON], head=head)
            return
        if path in ("/api/docs", "/api/docs/", "/api", "/api/"):
            if method not in ("GET", "HEAD"):
                await _send_error(send, _method_not_allowed(["GET"]))
                return
            if path in ("/api", "/api/"):
                await _send(send, 307, b"", [(b"location", b"/api/docs")])
                return
            await _send(send, 200, docs_html(), [(b"content-type", b"text/html; charset=utf-8")], head=head)
            return

        if not path.startswith(PREFIX + "/"):
            await _send_error(
                send,
                ApiError(
                    404,
                    f"Unknown path {path!r}: the management API lives under /api, the OpenAI- and "
                    "Anthropic-compatible API under /v1.",
                ),
            )
            return
        if self._cors is not None:
            origin = _header(scope, b"origin")
            if origin is not None:
                send = self._cors.wrap(send, origin)
        if method == "OPTIONS":
            await self._options(scope, path, send)
            return

        decision: Any = None
        extra: list[tuple[bytes, bytes]] = []
        try:
            if self._ctx is None:
                raise ApiError(503, "The management API is starting; try again in a moment.")
            op, params, allowed = match("GET" if head else method, path)
            caller, decision = await self._caller(
                scope, method, public=op is not None and op.auth == "public", extra=extra
            )
            if op is None:
                if allowed:
                    raise _method_not_allowed(allowed)
                raise _unknown_operation(path)
            query = op.parse_query(_query(scope))
            body = b""
            if op.body is not None:
                body = await self._body.read(receive, _header(scope, b"content-length"))
                if body:
                    _check_content_type(_header(scope, b"content-type"))
            cookies = read_cookies(scope["headers"])
            req = Request(method, path, params, query, op.parse_body(body), caller, cookies)
            reply = await op.handler(self._ctx, req)
        except Exception as exc:  # noqa: BLE001 - every failure gets the one error body (api_error)
            if isinstance(exc, _Refused):
                decision = exc.decision
            await _send_error(send, api_error(exc, f"{method} {path}"), [*extra, *rate_limit_headers(decision)])
            return
        if any(name == b"set-cookie" for name, _ in reply.headers):
            extra = [h for h in extra if h[0] != b"set-cookie"]  # the handler's cookies decide
        if reply.redirect is not None:
            headers = [(b"location", reply.redirect.encode()), _NO_STORE, _NO_REFERRER, *extra, *reply.headers]
            await _send(send, reply.status, b"", headers, head=head)
            return
        await _send(
            send,
            reply.status,
            _encode(reply.body),
            [_JSON, _NO_STORE, *extra, *reply.headers, *rate_limit_headers(decision)],
            head=head,
        )

    async def _caller(
        self, scope: Scope, method: str, *, public: bool, extra: list[tuple[bytes, bytes]]
    ) -> tuple[Caller, Decision | None]:
        """Who is calling, by the one rule of this API: a manage key when the request
        carries ``Authorization`` or ``x-api-key`` (checked by the process's one key
        authenticator, as on ``/v1``); else the session cookie (its session read from
        the store on every request, so an ended one is refused at once on every
        worker), with the CSRF token and a same-site ``Origin`` on a state change;
        else nobody, which only the public routes accept. ``extra`` collects headers
        for the answer (clearing a dead session's cookie)."""
        assert self.core is not None and self._ctx is not None
        headers = scope["headers"]
        client = scope.get("client")
        client_ip = str(client[0]) if client else None
        agent = _header(scope, b"user-agent")
        user_agent = agent.decode("latin-1")[:512] if agent else None
        accounts = self.core.accounts
        authorization, x_api_key, repeated = key_headers(headers)
        if authorization is not None or x_api_key is not None or repeated:
            auth = await self.core.auth.authenticate(authorization, x_api_key, MANAGE_SCOPE, repeated)
            if auth.refusal is not None:
                www = [_WWW_AUTH] if auth.refusal.status == 401 else []
                raise _Refused(ApiError(auth.refusal.status, auth.message, headers=www), auth.decision)
            assert auth.record is not None
            key_id = auth.record.id
            if accounts is None:
                actor = instance_actor(via=f"key:{key_id}", client_ip=client_ip, user_agent=user_agent)
            else:
                try:
                    actor = await accounts.actor_for_key(key_id, client_ip=client_ip)
                except (AccountDisabled, KeyNotFound):
                    raise _Refused(
                        ApiError(401, "The owner of this management key is disabled or gone.", headers=[_WWW_AUTH]),
                        auth.decision,
                    ) from None
            return Caller(actor=actor, key_id=key_id, client_ip=client_ip, user_agent=user_agent), auth.decision

        cookies = self._ctx.cookies
        token = cookies.session_token(read_cookies(headers))
        unsafe = method not in SAFE_METHODS
        if unsafe and (token is not None or public):
            refusal = same_origin_refusal(_header(scope, b"origin"), _header(scope, b"referer"), self._origins(scope))
            if refusal is not None and (token is not None or _header(scope, b"origin") is not None):
                raise ApiError(403, refusal, code="csrf_failed")
        if token is not None and accounts is not None:
            info = await accounts.authenticate_session(token, client_ip=client_ip, user_agent=user_agent)
            if info is None:
                extra.append(cookies.clear_session())
                if not public:
                    raise ApiError(401, "Your session has ended or expired; sign in again.", code="session_ended")
            else:
                if unsafe and not public and not csrf_matches(self.core.digester, token, _header(scope, CSRF_HEADER)):
                    raise ApiError(
                        403,
                        "Missing or wrong X-CSRF-Token header: a request signed in with the session cookie that "
                        "changes something must send the session's CSRF token (from sign-in or "
                        "GET /api/v1/auth/session).",
                        code="csrf_failed",
                    )
                caller = Caller(actor=info.actor, session=info, token=token, client_ip=client_ip, user_agent=user_agent)
                return caller, None
        if public:
            return Caller(actor=None, client_ip=client_ip, user_agent=user_agent), None
        raise ApiError(401, _NO_CREDENTIALS, headers=[_WWW_AUTH])

    def _origins(self, scope: Scope) -> set[str]:
        return request_origins(scope.get("scheme", "http"), _header(scope, b"host"), self._public_origin)

    async def _options(self, scope: Scope, path: str, send: Send) -> None:
        """``OPTIONS`` without a key: 204 with the path's methods, and for an allowed
        origin's preflight the CORS headers; 404 for a path that is no operation."""
        methods = sorted(set(match("OPTIONS", path)[2]))
        if not methods:
            await _send_error(send, _unknown_operation(path))
            return
        if "GET" in methods:
            methods.append("HEAD")
        allow = ", ".join([*methods, "OPTIONS"]).encode()
        headers = [(b"allow", allow)]
        origin = _header(scope, b"origin")
        if self._cors is not None and origin is not None and _header(scope, b"access-control-request-method"):
            cors = self._cors.preflight(origin, _header(scope, b"access-control-request-headers"), allow)
            if cors is not None:  # the origin's own headers are added by the wrapped send
                headers += [h for h in cors if h[0] != b"access-control-allow-origin"]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Refused(Exception):
    """A refusal of the key authenticator, with the limiter's decision for the headers."""

    def __init__(self, error: ApiError, decision: Decision | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.decision = decision


def api_error(exc: Exception, what: str = "request") -> ApiError:
    """The one mapping of a failure to the API's error body and status."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, _Refused):
        return exc.error
    if isinstance(exc, Throttled | Busy):
        wait = max(1, math.ceil(exc.retry_after))
        return ApiError(
            exc.status, exc.message, field=exc.field, code=exc.code, headers=[(b"retry-after", b"%d" % wait)]
        )
    if isinstance(exc, AccountError):
        return ApiError(exc.status, exc.message, field=exc.field, code=exc.code)
    if isinstance(exc, EmailNotVerified):
        return ApiError(403, str(exc), code=exc.code)
    if isinstance(exc, BodyError):
        return ApiError(exc.status, str(exc), headers=[_CLOSE] if exc.close else [])
    if isinstance(exc, KeyInputError):
        return ApiError(422, str(exc))
    if isinstance(exc, KeyNotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, StoreUnavailable):
        log.error("%s failed: %s", what, exc)
        return store_unavailable()
    if isinstance(exc, (KeyConflict, StoreError)):
        return ApiError(409, str(exc))
    if isinstance(exc, UsageQueryError):
        return ApiError(422, f"{exc.field}: {exc}", field=exc.field)
    if isinstance(exc, AgentRouterError):  # the store or the limiter region failing
        log.error("%s failed: %s", what, exc)
        return ApiError(503, "The management API cannot serve requests right now; retry shortly.")
    log.error("%s failed", what, exc_info=exc)
    return ApiError(500, "Internal error in the management API.")


def build_api(
    core: Core | None = None,
    *,
    settings: Settings | None = None,
    open_core: CoreOpener | None = None,
    run_monitor: bool = True,
) -> ManagementApi:
    """The management API app.

    ``core``: an opened ``Core`` to use; None to bind it later with
    ``await api.startup(core)`` or to open one at lifespan startup (``open_core(settings)``,
    by default ``Core.from_settings(settings)``). ``settings``: the server
    ``Settings`` (None: ``load_settings()``). ``run_monitor``: start the monitor task
    in startup.
    """
    return ManagementApi(core, settings=settings, open_core=open_core, run_monitor=run_monitor)


async def _open_core(settings: Settings) -> Core:
    return await Core.from_settings(settings)


# -- HTTP helpers ------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header (ASGI names are lowercase)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _unknown_operation(path: str) -> ApiError:
    return ApiError(404, f"Unknown path {path!r}; see /api/docs for the operations of this API.")


def _query(scope: Scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"")
    out: dict[str, list[str]] = {}
    if raw:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The query string is not UTF-8.") from None
        for name, value in parse_qsl(text, keep_blank_values=True):
            out.setdefault(name, []).append(value)
    return out


def _check_content_type(value: bytes | None) -> None:
    media = (value or b"").split(b";", 1)[0].strip().lower()
    if media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")):
        return
    raise ApiError(415, "Send the body as JSON with 'Content-Type: application/json'.")


def _method_not_allowed(allowed: list[str]) -> ApiError:
    methods = ", ".join(sorted(set(allowed)))
    return ApiError(405, f"Method not allowed here; use {methods}.", headers=[(b"allow", methods.encode())])


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, head: bool = False
) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


async def _send_error(send: Send, exc: ApiError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, exc.status, _encode(exc.body()), [_JSON, _NO_STORE, *exc.headers, *(extra or [])])
