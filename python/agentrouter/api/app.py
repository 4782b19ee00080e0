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

Public (no key): ``GET /api/openapi.json`` (the OpenAPI 3.1 document of v1) and
``GET /api/docs`` (a readable reference page built from it). Everything under
``/api/v1`` needs a management key.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from agentrouter.api.auth import ManageAuth, rate_limit_headers
from agentrouter.api.docs import docs_html
from agentrouter.api.errors import ApiError
from agentrouter.api.openapi import openapi_json
from agentrouter.api.routes import Context, Request, match
from agentrouter.asgi import Receive, Scope, Send, run_lifespan
from agentrouter.config import Settings, load_settings
from agentrouter.core import Core
from agentrouter.keys import KeyConflict, KeyInputError
from agentrouter.monitor.runner import Monitor
from agentrouter.store import StoreError

__all__ = ["MAX_BODY", "ManagementApi", "build_api"]

log = logging.getLogger("agentrouter.api")

CoreOpener = Callable[[Settings], Awaitable[Core]]

MAX_BODY = 1024 * 1024
PREFIX = "/api"
_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
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
        self._auth: ManageAuth | None = None
        if core is not None:
            self._bind(core)

    def _bind(self, core: Core) -> None:
        self.core = core
        self._ctx = Context(core)
        self._auth = ManageAuth(core)

    # -- lifecycle -------------------------------------------------------------

    async def startup(self, core: Core | None = None) -> None:
        """Bind to ``core`` (or open one) and start the monitor task."""
        if core is not None:
            self._bind(core)
        elif self.core is None:
            opener = self._open_core or _open_core
            self._bind(await opener(self.settings))
            self._owns_core = True
        assert self.core is not None
        if self._run_monitor and self.monitor is None:
            self.monitor = Monitor(self.core.store, self.settings, clock=self.core.now)
            self.monitor.start()

    async def shutdown(self) -> None:
        """Stop and await the monitor task; close the core if this app opened it."""
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            await monitor.stop()
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
        if path in ("/api/openapi.json", "/api/v1/openapi.json"):
            if method not in ("GET", "HEAD"):
                await _send_error(send, _method_not_allowed(["GET"]))
                return
            await _send(send, 200, openapi_json(), [_JSON], head=method == "HEAD")
            return
        if path in ("/api/docs", "/api/docs/", "/api", "/api/"):
            if method not in ("GET", "HEAD"):
                await _send_error(send, _method_not_allowed(["GET"]))
                return
            if path in ("/api", "/api/"):
                await _send(send, 307, b"", [(b"location", b"/api/docs")])
                return
            await _send(send, 200, docs_html(), [(b"content-type", b"text/html; charset=utf-8")], head=method == "HEAD")
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
        decision: Any = None
        try:
            if self._auth is None or self._ctx is None:
                raise ApiError(503, "The management API is starting; try again in a moment.")
            headers = _headers(scope)
            caller, decision = await self._auth.authenticate(headers.get(b"authorization"), headers.get(b"x-api-key"))
            op, params, allowed = match(method, path)
            if op is None:
                if allowed:
                    raise _method_not_allowed(allowed)
                raise ApiError(404, f"Unknown path {path!r}; see /api/docs for the operations of this API.")
            query = op.parse_query(_query(scope))
            body = b""
            if op.body is not None:
                body = await _read_body(receive, headers)
                if body:
                    _check_content_type(headers.get(b"content-type"))
            req = Request(method, path, params, query, op.parse_body(body), caller.id)
            reply = await op.handler(self._ctx, req)
        except ApiError as exc:
            await _send_error(send, exc, rate_limit_headers(decision) if exc.status != 429 else [])
            return
        except KeyInputError as exc:
            await _send_error(send, ApiError(422, str(exc)), rate_limit_headers(decision))
            return
        except (KeyConflict, StoreError) as exc:
            await _send_error(send, ApiError(409, str(exc)), rate_limit_headers(decision))
            return
        except Exception:
            log.exception("%s %s failed", method, path)
            await _send_error(
                send, ApiError(500, "Internal error in the management API."), rate_limit_headers(decision)
            )
            return
        await _send(
            send, reply.status, _encode(reply.body), [_JSON, _NO_STORE, *reply.headers, *rate_limit_headers(decision)]
        )


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
    by default ``Core.open`` on ``settings.data_dir``). ``settings``: the server
    ``Settings`` (None: ``load_settings()``). ``run_monitor``: start the monitor task
    in startup.
    """
    return ManagementApi(core, settings=settings, open_core=open_core, run_monitor=run_monitor)


async def _open_core(settings: Settings) -> Core:
    return await Core.open(Path(settings.data_dir) if settings.data_dir else None)


# -- HTTP helpers ------------------------------------------------------------------


def _headers(scope: Scope) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.lower(), value)
    return out


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


async def _read_body(receive: Receive, headers: dict[bytes, bytes]) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            if int(declared) > MAX_BODY:
                raise ApiError(413, f"The body is larger than {MAX_BODY} bytes.")
        except ValueError:
            raise ApiError(400, "Invalid Content-Length.") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "The client went away.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"The body is larger than {MAX_BODY} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


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
