"""The ASGI app: ``/v1`` in both dialects, on the hot path with no database access.

One request, in order::

    path → route            (dict; /healthz, /readyz, /metrics beside it, never under /v1)
    headers, one pass       (key headers, Content-Length, Origin, what is forwarded)
    OPTIONS                 (answered without a key: CORS preflight, else 204 + Allow)
    authenticate + limit    (agentrouter.auth: native key table and shared buckets)
    method, body, peek      (405 / 413 / 408 / 400; msgspec reads only "model" and "stream")
    model → provider        (routing.ModelRouter; 404 unknown, 400 other dialect)
    forward original bytes  (upstream.UpstreamClient, or the in-process mock)
    relay                   (JSON in one piece; SSE chunk by chunk as it arrives)
    usage                   (usage.UsageRecorder: key totals and a request-log record,
                             in memory; flushed by its own task to the worker's usage
                             writer process, store.writer)

Every answer to a request whose key was valid carries ``X-RateLimit-Limit``,
``-Remaining`` and ``-Reset`` (when the key has a limit at all) and is counted for the
key in one place, whatever produced it (the gateway's own 500 included):
``Gateway._record``, called once per request from the ``finally`` of ``_handle``.
The metrics recorder (``gateway.metrics``) counts every answer on ``/v1`` in the same
places (that ``finally``, and the answers given before a key is known), a few
integer additions each.
Every answer carries ``x-request-id`` (and ``request-id`` on the Anthropic routes,
where the SDK reads it); answers to an allowed browser origin carry the CORS headers
(``agentrouter.cors``). ``HEAD`` on a ``GET`` route answers like ``GET`` without the
body. Failures map to the dialect's error in one place (``_failure``): the project's
own errors (the store or the limiter region failing) → 503, anything else → 500.

Lifespan startup opens the core (store, shared limiter, digester), loads the key
table, starts the upstream pools, the usage writer process and the usage flusher.
Shutdown (Granian sends it once the worker's in-flight requests are done) waits for
what is still running, up to ``shutdown_timeout`` counted from SIGTERM, cancels the
rest, writes the usage and closes everything. Every task the app starts is tracked and awaited.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from agentrouter.asgi import ASGIApp, Receive, Scope, Send, run_lifespan
from agentrouter.auth import INFERENCE_SCOPE, KeyAuthenticator, Refusal, add_rate_limit_headers
from agentrouter.config import Settings
from agentrouter.cors import cors_policy
from agentrouter.errors import AgentRouterError
from agentrouter.gateway import health, mock
from agentrouter.gateway.errors import Dialect, ErrorKind, Kinds, error_body, error_event
from agentrouter.gateway.http1 import CLOSE
from agentrouter.gateway.metrics import NO_PROVIDER, Endpoint, NullRecorder, Publisher, Recorder, Snapshot
from agentrouter.gateway.metrics.snapshot import process_start
from agentrouter.gateway.providers import Provider
from agentrouter.gateway.routing import ROUTES, ModelRouter, Route, RouteKind
from agentrouter.gateway.upstream import (
    UpstreamClient,
    UpstreamError,
    UpstreamInvalid,
    UpstreamResponse,
    UpstreamTimeout,
)
from agentrouter.gateway.usage import MAX_TOKENS, NotJSONObject, StreamUsage, Tokens, UsageRecorder, tokens_from_json
from agentrouter.request_body import BodyError, BodyReader
from agentrouter.store.models import MAX_CALLER_REQUEST_ID
from agentrouter.store.writer import UsageWriter

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("agentrouter.gateway")

CoreOpener = Callable[[Settings], Awaitable[Any]]

# Request headers never forwarded: the caller's credentials, hop-by-hop headers
# (RFC 9110 §7.6.1), what the client library sets itself, cookies (an upstream has
# no business with the caller's cookies), the caller's x-request-id (the gateway's
# own goes upstream; the caller's is kept in the request log), and the OpenAI
# organization and project (they choose whom the provider's key bills: only the
# provider's configuration sets them).
_DROP_REQUEST = frozenset(
    {
        b"host",
        b"authorization",
        b"x-api-key",
        b"x-request-id",
        b"openai-organization",
        b"openai-project",
        b"content-length",
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"accept-encoding",
        b"cookie",
        b"expect",
    }
)
# Upstream response headers not relayed: hop-by-hop, the framing (recomputed), what
# the gateway sets itself, cookies. (Retry-After and retry-after-ms are relayed: the
# OpenAI SDK reads retry-after-ms first; a 3xx and its Location never reach _relay_headers.)
_DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
        b"server",
        b"set-cookie",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    }
)
_UPSTREAM_ID_HEADERS = frozenset({b"x-request-id", b"request-id"})

_CT_JSON = (b"content-type", b"application/json")
_NO_TOKENS = Tokens(0, 0)
_SSE_PREFIX = b"text/event-stream"
_CLIENT_CLOSED = 499  # recorded (nginx's convention) when the caller left before an answer
WATCH_AFTER = 0.05
"""Seconds after which a proxied request starts watching for the caller's disconnect."""


class _Peek(msgspec.Struct):
    """The only fields of a request body the gateway reads."""

    model: str | None = None
    stream: bool | None = None


_peek = msgspec.json.Decoder(_Peek).decode
_encode = msgspec.json.Encoder().encode


class _BadRequest(Exception):
    def __init__(self, kind: ErrorKind, message: str, param: str | None = None, *, close: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.param = param
        self.close = close  # the body was left unread: close the connection after the answer


_REFUSALS: dict[Refusal, ErrorKind] = {
    Refusal.MISSING: Kinds.MISSING_KEY,
    Refusal.NOT_BEARER: Kinds.INVALID_KEY,
    Refusal.AMBIGUOUS: Kinds.INVALID_KEY,
    Refusal.MALFORMED: Kinds.INVALID_KEY,
    Refusal.UNKNOWN: Kinds.INVALID_KEY,
    Refusal.DELETED: Kinds.INVALID_KEY,
    Refusal.EXPIRED: Kinds.INVALID_KEY,
    Refusal.WRONG_SCOPE: Kinds.WRONG_SCOPE,
    Refusal.RATE_LIMITED: Kinds.RATE_LIMITED,
    Refusal.UNAVAILABLE: Kinds.UNAVAILABLE,
}
_BODY_KINDS = {413: Kinds.TOO_LARGE, 408: Kinds.REQUEST_TIMEOUT, 400: Kinds.BAD_REQUEST}
_CLOSE = (b"connection", b"close")
_RETRY_SOON = (b"retry-after", b"1")  # the shared limiter unreachable, failure mode "closed"


async def _open_core(settings: Settings) -> Any:
    from agentrouter.core import Core

    return await Core.from_settings(settings)


class Gateway:
    """The ASGI callable. Build it with ``create_app``; one per worker process."""

    def __init__(self, settings: Settings, *, open_core: CoreOpener | None = None, fallback: ASGIApp | None = None):
        self.settings = settings
        self._open_core = open_core or _open_core
        self._fallback = fallback
        self._body = BodyReader(
            settings.max_body_bytes, idle_timeout=settings.body_idle_timeout, total_timeout=settings.body_timeout
        )
        self._cors = cors_policy(settings.cors_allow_origins)
        self._providers = [Provider(p) for p in settings.providers]
        self._router: ModelRouter[Provider] = ModelRouter([(p, p.settings.models) for p in self._providers])
        self._clients = {p.name: UpstreamClient(p.settings) for p in self._providers if not p.is_mock}
        self._models_openai, self._models_anthropic = self._model_lists()
        for i, provider in enumerate(self._providers):
            provider.metrics_index = i + 1
        names = [p.name for p in self._providers]
        self.metrics = Recorder(_ROUTE_LABELS, names) if settings.metrics_enabled else NullRecorder((), ())
        self._metrics_dir = settings.data_path / "metrics"
        self._metrics_endpoint = Endpoint(
            self._metrics_snapshot, self._metrics_dir, require_key=settings.metrics_require_key
        )
        self._metrics_publisher: Publisher | None = None
        self._process_start = 0
        self.core: Any = None
        self.auth: KeyAuthenticator | None = None
        self.usage: UsageRecorder | None = None
        self.usage_writer: UsageWriter | None = None
        self._rid_prefix = "req_"
        self._rid_counter = itertools.count(1)
        # Operator endpoints served before the fallback app, never under /v1.
        self._operator_routes: dict[str, Callable[[Scope, Send], Awaitable[None]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics_answer,
        }
        self._inflight: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # watchers and the drain timer
        self._draining = False
        self._drain_deadline: float | None = None
        self._restore_signals: list[Callable[[], object]] = []

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown, log=log, name="agentrouter")
        elif self._fallback is not None:
            await self._fallback(scope, receive, send)

    # ------------------------------------------------------------------ lifespan

    async def startup(self) -> None:
        """Open the core, load the key table, start the pools, the usage writer and the
        mounted app (the management API: it shares this worker's core), then the usage
        flusher."""
        self._rid_prefix = "req_" + secrets.token_hex(6)  # per worker: ids unique across workers
        core = await self._open_core(self.settings)
        writer = (
            UsageWriter(core.store_target, connect_timeout=self.settings.store_connect_timeout)
            if self.settings.usage_writer == "process"
            else None
        )
        auth: KeyAuthenticator = core.auth
        try:
            await auth.reload()
            core.follow_changes()  # a shared limiter's key-change feed (no-op without one)
            for client in self._clients.values():
                await client.start()
            if writer is not None:
                await writer.start()
            startup = getattr(self._fallback, "startup", None)
            if startup is not None:
                await startup(core)
        except BaseException:
            if writer is not None:
                await writer.close()
            await self._close_clients()
            await core.close()
            raise
        self.core = core
        self.auth = auth
        self.usage_writer = writer
        self.usage = UsageRecorder(
            writer or core.store.add_usage,
            self.settings.usage_flush_interval,
            max_pending_requests=self.settings.usage_buffer_records,
        )
        self.usage.start()
        if self.settings.metrics_enabled:
            self.metrics.usage = self.usage
            self.metrics.limiter = core.remote  # None without limiter_url
            self._process_start = process_start(os.getpid()) or 0
            self._metrics_publisher = Publisher(self._metrics_snapshot, self._metrics_dir)
            self._metrics_publisher.start()
        self._hook_termination_signals()
        # What start-up allocated lives as long as the worker: keep it out of the
        # collector's full passes (shorter pauses on the hot path).
        gc.freeze()
        log.info("gateway ready: %d keys, providers %s", len(auth.table), ", ".join(p.name for p in self._providers))

    async def shutdown(self) -> None:
        """Drain (up to the deadline), then write usage and close everything."""
        for restore in self._restore_signals:
            restore()
        self._restore_signals.clear()
        self._draining = True
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout
        await self._drain()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._body.close()
        if self.usage is not None:
            await self.usage.close()
        if self.usage_writer is not None:
            await self.usage_writer.close()
        if self._metrics_publisher is not None:
            await self._metrics_publisher.close()  # the last counts, the usage written
            self._metrics_publisher = None
        try:
            shutdown = getattr(self._fallback, "shutdown", None)
            if shutdown is not None:
                await shutdown()  # the mounted app, while the core it shares is open
        finally:
            await self._close_clients()
            if self.core is not None:
                await self.core.close()
                self.core = None

    async def _drain(self) -> None:
        while self._inflight:
            left = (self._drain_deadline or 0) - time.monotonic()
            if left <= 0:
                log.warning("shutdown timeout: cancelling %d requests still in flight", len(self._inflight))
                for task in list(self._inflight):
                    task.cancel()
                await asyncio.gather(*list(self._inflight), return_exceptions=True)
                return
            await asyncio.wait(list(self._inflight), timeout=left)

    async def _close_clients(self) -> None:
        for client in self._clients.values():
            await client.close()

    def _hook_termination_signals(self) -> None:
        """Learn of SIGTERM/SIGINT when Granian does, to start the drain clock then.

        Granian (2.x) stops accepting on the signal, waits for the worker's in-flight
        requests, and only then sends ``lifespan.shutdown``; a long stream would hold
        that back until the parent kills the worker. So from the signal on, requests
        have ``shutdown_timeout`` seconds, then they are cancelled, Granian proceeds
        to the lifespan shutdown, and the usage is written.

        Granian's handler is a loop signal handler (``loop.add_signal_handler``): the
        loop, asyncio's or uvloop's, learns of the signal through the wakeup fd, and
        the Python-level handler it installs does nothing. The app puts its own
        Python-level handler in that place, which leaves the loop's dispatch as it
        was. Where no loop handler is installed (the app outside Granian, e.g. in
        tests) the process's own handling of the signal is left alone.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous) or previous is signal.default_int_handler:
                continue

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self._on_termination)
                previous(signum, frame)

            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread: no signals here
                return
            self._restore_signals.append(functools.partial(signal.signal, sig, previous))

    def _on_termination(self) -> None:
        if self._draining:
            return
        self._draining = True
        self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout
        self._track(asyncio.get_running_loop().create_task(self._drain(), name="agentrouter-drain"))

    def _start_watcher(self, receive: Receive, task: asyncio.Task[Any], left: _Left) -> None:
        if not task.done():
            left.watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, task, left))
            self._track(left.watcher)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ HTTP

    def _request_id(self) -> str:
        return f"{self._rid_prefix}{next(self._rid_counter):010x}"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        route = ROUTES.get(path)
        if route is None:
            if path.startswith("/v1/models/"):
                route = _MODEL_DETAIL
            else:
                operator = self._operator_routes.get(path)
                if operator is not None:
                    await operator(scope, send)
                elif self._fallback is not None and _for_fallback(path):
                    await self._fallback(scope, receive, send)
                else:
                    dialect, message = _unknown_path(path)
                    await _send_error(send, dialect, Kinds.ROUTE_NOT_FOUND, message, self._request_id(), None)
                    self.metrics.answer(_OTHER_ROUTE, dialect, 404, NO_PROVIDER, 0, 0)
                return

        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            await self._handle(route, scope, receive, send, task)
        except Exception as exc:  # noqa: BLE001 - answered by the one mapping, _failure
            # Before a key was found (the store failing during a key-table reload), or a
            # bug: answered here, and counted for no key (there is none yet).
            status = await self._failure(exc, send, route.dialect, self._request_id(), None)
            self.metrics.answer(route.index, route.dialect, status, NO_PROVIDER, 0, 0)
        finally:
            self._inflight.discard(task)

    async def _failure(self, exc: Exception, send: Send, dialect: Dialect, rid: str, decision: Any) -> int:
        """The one mapping of an unexpected failure to an answer in the dialect: the
        project's own errors (the store, the limiter region) → 503, anything else (a
        bug) → 500. Returns the status, as counted. If the answer had started, the send
        fails too, and the caller sees the stream cut."""
        if isinstance(exc, AgentRouterError):
            log.error("request %s: %s", rid, exc)
            kind, message = Kinds.UNAVAILABLE, "The gateway cannot serve requests right now; retry shortly."
        else:
            log.error("request %s failed", rid, exc_info=exc)
            kind, message = Kinds.INTERNAL, "Internal error in the gateway."
        try:
            await _send_error(send, dialect, kind, message, rid, decision)
        except Exception:  # noqa: BLE001, S110 - the answer had started; the cut stream is the answer
            pass
        return kind.status

    async def _handle(self, route: Route, scope: Scope, receive: Receive, send: Send, task: asyncio.Task[Any]) -> None:
        started = time.perf_counter()
        rid = self._request_id()

        # One pass over the headers.
        authorization = x_api_key = content_length = connection = user_agent = origin = caller_rid = None
        repeated = False  # a second Authorization or x-api-key header: ambiguous credentials
        forward: list[tuple[bytes, bytes]] = []
        anthropic_caller = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    repeated = True
                authorization = value
            elif name == b"x-api-key":
                if x_api_key is not None:
                    repeated = True
                x_api_key = value
            elif name == b"content-length":
                content_length = value
            elif name == b"connection":
                connection = value
            elif name == b"x-request-id":
                caller_rid = value  # for the request log; the gateway's own id goes upstream
            elif name not in _DROP_REQUEST:
                forward.append((name, value))
                if name == b"anthropic-version":
                    anthropic_caller = True
                elif name == b"user-agent":
                    user_agent = value
                elif name == b"origin":
                    origin = value

        dialect = route.dialect
        if route.kind is RouteKind.MODELS and anthropic_caller:
            dialect = Dialect.ANTHROPIC
        if origin is not None and self._cors is not None:
            send = self._cors.wrap(send, origin)
        method: str = scope["method"]
        if method == "OPTIONS":
            await self._options(route, scope, rid, dialect, origin, send)
            self.metrics.answer(route.index, dialect, 204, NO_PROVIDER, 0, 0)
            return

        assert self.auth is not None and self.usage is not None, "lifespan startup has not run"
        auth = await self.auth.authenticate(authorization, x_api_key, INFERENCE_SCOPE, repeated)
        record = auth.record
        if record is None:  # no valid key: answered, counted for no key
            assert auth.refusal is not None
            kind = _REFUSALS[auth.refusal]
            await _send_error(send, dialect, kind, auth.message, rid, auth.decision)
            self.metrics.answer(route.index, dialect, kind.status, NO_PROVIDER, 0, 0)
            return

        # From here on the request is counted for the key, once, in `finally`,
        # whatever path answers it.
        decision = auth.decision
        status = 500
        inp = out = 0
        model: str | None = None
        provider_index = NO_PROVIDER
        try:
            if auth.refusal is not None:
                if auth.refusal is Refusal.RATE_LIMITED:
                    self.metrics.refused(route.index)
                kind = _REFUSALS[auth.refusal]
                retry = [_RETRY_SOON] if kind is Kinds.UNAVAILABLE else None
                await _send_error(send, dialect, kind, auth.message, rid, decision, extra=retry)
                status = kind.status
                return
            try:
                if method != route.method and not (method == "HEAD" and route.method == "GET"):
                    raise _BadRequest(
                        Kinds.METHOD_NOT_ALLOWED,
                        f"Method {method} is not allowed on {route.path}; use {route.method}.",
                    )
                if route.kind is RouteKind.MODELS:
                    status = await self._models(route, scope, dialect, rid, decision, send)
                    return
                try:
                    body = await self._body.read(receive, content_length, task)
                except BodyError as exc:
                    raise _BadRequest(_BODY_KINDS[exc.status], str(exc), close=exc.close) from None
                model, _stream = _peek_body(body)
                provider = self._router.resolve(model)
                if provider is None:
                    raise _BadRequest(
                        Kinds.MODEL_NOT_FOUND,
                        f"The model '{model}' does not exist or is not served by this gateway.",
                        "model",
                    )
                provider_index = provider.metrics_index
                if not provider.speaks(dialect):
                    raise _BadRequest(Kinds.DIALECT_MISMATCH, _mismatch_message(model, provider, route), "model")
            except _BadRequest as exc:
                extra = [route.allow_header] if exc.kind is Kinds.METHOD_NOT_ALLOWED else None
                if exc.close:
                    extra = [_CLOSE]
                await _send_error(send, dialect, exc.kind, str(exc), rid, decision, exc.param, extra)
                status = exc.kind.status
                return

            if provider.is_mock:
                status, inp, out = await self._serve_mock(
                    route, dialect, provider, model, body, rid, decision, send, started
                )
            else:
                if connection is not None:
                    nominated = {t.strip().lower() for t in connection.split(b",")}
                    forward = [(n, v) for n, v in forward if n not in nominated]
                status, inp, out = await self._proxy(
                    route, dialect, provider, body, forward, scope, receive, send, rid, decision, started
                )
        except asyncio.CancelledError:
            status = _CLIENT_CLOSED
            raise
        except Exception as exc:  # noqa: BLE001 - answered by the one mapping, _failure
            status = await self._failure(exc, send, dialect, rid, decision)
        finally:
            self.metrics.answer(route.index, dialect, status, provider_index, inp, out)
            self._record(record.id, status, inp, out, started, scope, model, user_agent, caller_rid)

    def _record(
        self,
        key_id: str,
        status: int,
        inp: int,
        out: int,
        started: float,
        scope: Scope,
        model: str | None,
        user_agent: bytes | None,
        caller_rid: bytes | None = None,
    ) -> None:
        """Count one answer for a key: the one place every request with a valid key
        goes through (status, tokens, latency, model)."""
        client = scope.get("client")
        assert self.usage is not None
        self.usage.record(
            key_id,
            status,
            inp,
            out,
            (time.perf_counter() - started) * 1000.0,
            client[0] if client else None,
            model,
            user_agent.decode("latin-1") if user_agent is not None else None,
            # Longer than that: not kept, and no error (RFC 9110 sets no limit).
            caller_rid.decode("latin-1")
            if caller_rid is not None and len(caller_rid) <= MAX_CALLER_REQUEST_ID
            else None,
        )

    async def _options(
        self, route: Route, scope: Scope, rid: str, dialect: Dialect, origin: bytes | None, send: Send
    ) -> None:
        """``OPTIONS``, answered without a key: a CORS preflight from an allowed origin
        gets its headers; anything else 204 with ``Allow``. Counted for no key."""
        methods = b"GET, HEAD, OPTIONS" if route.method == "GET" else route.method.encode() + b", OPTIONS"
        headers = [(b"allow", methods)]
        if origin is not None and self._cors is not None:
            requested = preflight = None
            for name, value in scope["headers"]:
                if name == b"access-control-request-method":
                    preflight = value
                elif name == b"access-control-request-headers":
                    requested = value
            if preflight is not None:
                # The answer's own CORS headers come from the preflight, not from `send`'s wrapper.
                cors = self._cors.preflight(origin, requested, methods)
                if cors is not None:
                    headers += [h for h in cors if h[0] != b"access-control-allow-origin"]
        await send(
            {"type": "http.response.start", "status": 204, "headers": headers + _common_headers(rid, dialect, None)}
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _healthz(self, scope: Scope, send: Send) -> None:
        await health.answer(scope, send, 200, health.ALIVE)

    async def _metrics_answer(self, scope: Scope, send: Send) -> None:
        if not self.settings.metrics_enabled:
            message = "Unknown path '/metrics': metrics are disabled on this server (metrics_enabled = false)."
            await _send_error(send, Dialect.OPENAI, Kinds.ROUTE_NOT_FOUND, message, self._request_id(), None)
            return
        await self._metrics_endpoint.answer(scope, send, self.auth)

    def _metrics_snapshot(self) -> Snapshot:
        return self.metrics.snapshot(os.getpid(), os.getppid(), self._process_start)

    async def _readyz(self, scope: Scope, send: Send) -> None:
        problem = await health.readiness(self.core, self._draining)
        limiter = self.core.limiter_state() if self.core is not None else None
        if problem is None:
            document = health.READY if limiter is None else {**health.READY, "limiter": limiter}
            await health.answer(scope, send, 200, document)
        else:
            document = {"status": "unavailable", "reason": problem}
            if limiter is not None:
                document["limiter"] = limiter
            await health.answer(scope, send, 503, document)

    # ------------------------------------------------------------------ answers

    async def _models(self, route: Route, scope: Scope, dialect: Dialect, rid: str, decision: Any, send: Send) -> int:
        if route is _MODEL_DETAIL:
            name = scope["path"][len("/v1/models/") :]
            provider = self._router.resolve(name) if name else None
            if provider is None:
                raise _BadRequest(Kinds.MODEL_NOT_FOUND, f"The model '{name}' does not exist.", "model")
            body = _encode(_model_entry(name, provider, dialect))
        else:
            body = self._models_anthropic if dialect is Dialect.ANTHROPIC else self._models_openai
        if scope["method"] == "HEAD":
            await _send_response(send, 200, [_CT_JSON], body, rid, dialect, decision, head=True)
        else:
            await _send_response(send, 200, [_CT_JSON], body, rid, dialect, decision)
        return 200

    def _model_lists(self) -> tuple[bytes, bytes]:
        names = self._router.exact_names
        openai_list = {"object": "list", "data": [_model_entry(n, p, Dialect.OPENAI) for n, p in names]}
        anthropic_entries = [_model_entry(n, p, Dialect.ANTHROPIC) for n, p in names]
        anthropic_list = {
            "data": anthropic_entries,
            "has_more": False,
            "first_id": anthropic_entries[0]["id"] if anthropic_entries else None,
            "last_id": anthropic_entries[-1]["id"] if anthropic_entries else None,
        }
        return _encode(openai_list), _encode(anthropic_list)

    async def _serve_mock(
        self,
        route: Route,
        dialect: Dialect,
        provider: Provider,
        model: str,
        body: bytes,
        rid: str,
        decision: Any,
        send: Send,
        started: float,
    ) -> tuple[int, int, int]:
        """The built-in provider's answer; all its time is the gateway's own (no upstream)."""
        result = mock.handle(route.kind, dialect, model, body, rid)
        headers = [(b"content-type", result.content_type)]
        metrics = self.metrics
        index = provider.metrics_index
        if not result.stream:
            metrics.added(index, time.perf_counter() - started)
            await _send_response(send, result.status, headers, result.chunks[0], rid, dialect, decision)
            return result.status, result.input_tokens, result.output_tokens
        headers.append((b"cache-control", b"no-cache"))
        metrics.added(index, time.perf_counter() - started)
        await send(
            {
                "type": "http.response.start",
                "status": result.status,
                "headers": headers + _common_headers(rid, dialect, decision),
            }
        )
        metrics.active_streams += 1
        try:
            first = True
            for chunk in result.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if first:
                    first = False
                    metrics.first_byte(index, time.perf_counter() - started)
                await asyncio.sleep(0)  # one event at a time, as a real upstream delivers them
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            metrics.active_streams -= 1
        return result.status, result.input_tokens, result.output_tokens

    async def _proxy(
        self,
        route: Route,
        dialect: Dialect,
        provider: Provider,
        body: bytes,
        forward: list[tuple[bytes, bytes]],
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: str,
        decision: Any,
        started: float,
    ) -> tuple[int, int, int]:
        """Forward the request and relay the answer; (status to count, input, output).

        Never relayed as they came: an upstream redirect (never followed either), an
        answer that breaks HTTP/1.1, a 2xx JSON answer that is not a JSON object (502s
        in the dialect); a stream cut or stalled ends with the dialect's error event
        and counts as a 502/504."""
        client = self._clients[provider.name]
        path = provider.paths[route.kind]
        query = scope.get("query_string")
        if query:
            path = path + b"?" + query
        if provider.default_headers:
            present = {n for n, _ in forward}
            forward += [(n, v) for n, v in provider.default_headers if n not in present]
        forward += provider.auth_headers
        forward.append((b"x-request-id", rid.encode()))  # the caller's own is never forwarded

        # The caller may leave at any point from here on. A request still running after
        # WATCH_AFTER seconds (a stream, a slow answer) gets a watcher that turns the
        # disconnect into a cancellation of this task, which closes the upstream
        # request. Quick requests never pay for the watcher task: only for a timer.
        task = asyncio.current_task()
        assert task is not None
        left = _Left()
        loop = asyncio.get_running_loop()
        watch = loop.call_later(WATCH_AFTER, self._start_watcher, receive, task, left)
        started_response = streaming = False
        status = 502
        upstream = None
        meter: StreamUsage | None = None
        metrics = self.metrics
        index = provider.metrics_index
        try:
            sent_at = time.perf_counter()
            try:
                upstream = await client.post(path, body, forward)
            except UpstreamError as exc:
                return await _upstream_failed(send, dialect, provider, exc, rid, decision, "")
            status = upstream.status
            if 300 <= status < 400:
                location = next((v for n, v in upstream.headers if n == b"location"), b"")
                log.warning(
                    "provider %s: answered %d with a redirect to %r, refused (not followed, not relayed) (%s)",
                    provider.name,
                    status,
                    location[:200].decode("latin-1"),
                    rid,
                )
                kind = Kinds.UPSTREAM_REDIRECT
                message = (
                    f"The upstream provider '{provider.name}' answered with a redirect ({status}); the gateway "
                    "neither follows nor relays redirects."
                )
                await _send_error(send, dialect, kind, message, rid, decision)
                return kind.status, 0, 0
            out_headers, is_sse = _relay_headers(upstream.headers)
            common = _common_headers(rid, dialect, decision)
            if not is_sse:
                try:
                    data = await client.read(upstream)
                except UpstreamError as exc:
                    return await _upstream_failed(
                        send, dialect, provider, exc, rid, decision, " while reading the answer"
                    )
                upstream_time = time.perf_counter() - sent_at
                metrics.upstream(index, upstream_time)
                tokens = _NO_TOKENS
                if 200 <= status < 300 and status != 204:  # a 204 has no body to check
                    try:
                        tokens = tokens_from_json(data)
                    except NotJSONObject as exc:
                        log.warning(
                            "provider %s: a %d answer that is not a JSON object (%s; %d bytes), refused (%s)",
                            provider.name,
                            status,
                            exc,
                            len(data),
                            rid,
                        )
                        kind = Kinds.UPSTREAM_INVALID
                        message = f"The upstream provider '{provider.name}' sent an answer that is not a JSON object."
                        await _send_error(send, dialect, kind, message, rid, decision)
                        return kind.status, 0, 0
                    if tokens.ignored:
                        self._bad_usage(provider)
                out_headers.append((b"content-length", b"%d" % len(data)))
                started_response = True
                metrics.added(index, time.perf_counter() - started - upstream_time)
                await send({"type": "http.response.start", "status": status, "headers": out_headers + common})
                await send({"type": "http.response.body", "body": data, "more_body": False})
                return status, tokens.input, tokens.output

            upstream_time = time.perf_counter() - sent_at
            metrics.upstream(index, upstream_time)
            started_response = streaming = True
            metrics.active_streams += 1
            metrics.added(index, time.perf_counter() - started - upstream_time)
            await send({"type": "http.response.start", "status": status, "headers": out_headers + common})
            meter = StreamUsage()
            status = await _relay_stream(upstream, meter, dialect, provider, rid, send, metrics, started)
            tokens = meter.tokens()
            if tokens.ignored:
                self._bad_usage(provider)
            return status, tokens.input, tokens.output
        except asyncio.CancelledError:
            if not (left.gone or self._draining) or task.uncancel() > 0:
                raise
            # The caller left, or the shutdown timeout ran out: the upstream request is
            # closed in `finally`, and the request is counted with what it got.
            tokens = meter.tokens() if meter is not None else _NO_TOKENS
            if left.gone:
                return (status if started_response else _CLIENT_CLOSED), tokens.input, tokens.output
            kind = Kinds.SHUTTING_DOWN
            if streaming:
                event = error_event(dialect, kind, "The gateway is shutting down; the stream was cut.", rid)
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return kind.status, tokens.input, tokens.output
            if started_response:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return status, tokens.input, tokens.output
            await _send_error(send, dialect, kind, "The gateway is shutting down; retry the request.", rid, decision)
            return kind.status, 0, 0
        finally:
            if streaming:
                metrics.active_streams -= 1
            if upstream is not None:
                UpstreamClient.release(upstream)
            watch.cancel()
            watcher = left.watcher
            if watcher is not None and not watcher.done():
                watcher.cancel()  # awaited at shutdown, with every tracked task

    def _bad_usage(self, provider: Provider) -> None:
        """Log, once per provider (per worker), that its usage numbers were not counts."""
        if not provider.bad_usage_logged:
            provider.bad_usage_logged = True
            log.warning(
                "provider %s: a usage number that is not a token count (negative, not an integer, or over %d); "
                "counted as 0 (logged once)",
                provider.name,
                MAX_TOKENS,
            )


async def _upstream_failed(
    send: Send, dialect: Dialect, provider: Provider, exc: UpstreamError, rid: str, decision: Any, where: str
) -> tuple[int, int, int]:
    """The 502/504 in the dialect for a request the upstream did not answer usably."""
    log.warning("provider %s: %s%s (%s)", provider.name, exc, where, rid)
    name = provider.name
    if isinstance(exc, UpstreamTimeout):
        kind, message = Kinds.UPSTREAM_TIMEOUT, f"The upstream provider '{name}' did not answer in time."
    elif isinstance(exc, UpstreamInvalid):
        kind, message = Kinds.UPSTREAM_INVALID, f"The upstream provider '{name}' sent an invalid HTTP answer."
    elif where:
        kind, message = Kinds.UPSTREAM_UNAVAILABLE, f"The upstream provider '{name}' broke off its answer."
    else:
        kind, message = Kinds.UPSTREAM_UNAVAILABLE, f"The upstream provider '{name}' cannot be reached."
    await _send_error(send, dialect, kind, message, rid, decision)
    return kind.status, 0, 0


_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_MAX_HELD = 1 << 20
_STREAM_ENDS = rb"(?:message_stop|error|response\.(?:completed|failed|incomplete))"
_TERMINAL = re.compile(
    rb"^(?:data: ?\[DONE\]|data: ?\{\s*\"error\"|event: ?%s\s*$)|\"type\": ?\"%s\"" % (_STREAM_ENDS, _STREAM_ENDS),
    re.MULTILINE,
)


def _event_end(data: bytes) -> int:
    """The index after the last complete SSE event in ``data`` (0: none)."""
    end = 0
    for sep in _EVENT_ENDS:
        at = data.rfind(sep)
        if at >= 0:
            end = max(end, at + len(sep))
    return end


def _ends_with_terminal_event(data: bytes) -> bool:
    """Whether the last event in ``data`` ends a stream of either dialect: ``[DONE]``,
    Anthropic's ``message_stop``, the Responses API's ``response.completed`` /
    ``.failed`` / ``.incomplete``, or an error event."""
    data = data.rstrip(b"\r\n")
    start = max(data.rfind(b"\n\n"), data.rfind(b"\n\r\n"), data.rfind(b"\r\r"), 0)
    return _TERMINAL.search(data, start) is not None


async def _relay_stream(
    upstream: UpstreamResponse,
    meter: StreamUsage,
    dialect: Dialect,
    provider: Provider,
    rid: str,
    send: Send,
    metrics: Recorder,
    started: float,
) -> int:
    """Relay an SSE body as it arrives, whole events at a time; the status to count
    (and, to ``metrics``, the time from ``started`` to the first bytes relayed).

    A read of the upstream that ends inside an event keeps that event's start until
    its end arrives (one ``endswith`` per read when the upstream writes whole events,
    as the vendors do), so what a cut stream loses is only an unfinished event, never
    half of one that an SDK would fail to parse before it sees the error event.

    The stream is cut when the connection closes before its framing says the body
    ended (``Content-Length``, the last chunk), when the upstream is silent for
    ``read_timeout``, or, for a body delimited only by the close, when its last event
    is not a terminal one (``_ends_with_terminal_event``): the caller then gets the
    dialect's error event before the end, and the request counts as a 502 (504 for
    the silence).
    """
    held: list[bytes] = []
    held_size = 0
    last = b""
    first = True
    try:
        async for chunk in UpstreamClient.iter_chunks(upstream):
            meter.feed(chunk)
            if chunk.endswith(_EVENT_ENDS) or held_size + len(chunk) > _MAX_HELD:
                # Whole events (or an event over 1 MiB: relayed as it comes).
                if held:
                    held.append(chunk)
                    chunk = b"".join(held)
                    held, held_size = [], 0
            else:
                # The read ends inside an event: relay what is complete, keep the rest.
                # (An event end may straddle the previous read and this one.)
                probe = held[-1][-3:] if held else b""
                cut = _event_end(probe + chunk) - len(probe)
                if cut <= 0:
                    held.append(chunk)
                    held_size += len(chunk)
                    continue
                held.append(chunk[:cut])
                rest = chunk[cut:]
                chunk = b"".join(held)
                held, held_size = [rest], len(rest)
            last = chunk
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if first:
                first = False
                metrics.first_byte(provider.metrics_index, time.perf_counter() - started)
    except UpstreamError as exc:
        log.warning("provider %s: %s during a stream (%s)", provider.name, exc, rid)
        if isinstance(exc, UpstreamTimeout):
            kind = Kinds.UPSTREAM_TIMEOUT
            message = (
                f"The upstream provider '{provider.name}' sent nothing for {provider.settings.read_timeout:g} s; "
                "the stream was cut."
            )
        else:
            kind = Kinds.UPSTREAM_INVALID if isinstance(exc, UpstreamInvalid) else Kinds.UPSTREAM_UNAVAILABLE
            message = f"The upstream provider '{provider.name}' broke off the stream before its end."
        return await _end_stream(send, error_event(dialect, kind, message, rid), kind.status)
    rest = b"".join(held)
    if upstream.framing == CLOSE and not _ends_with_terminal_event(last + rest):
        log.warning(
            "provider %s: the stream ended, by closing the connection, without its final event (%s)",
            provider.name,
            rid,
        )
        kind = Kinds.UPSTREAM_UNAVAILABLE
        message = f"The upstream provider '{provider.name}' broke off the stream before its end."
        return await _end_stream(send, error_event(dialect, kind, message, rid), kind.status)
    return await _end_stream(send, rest, upstream.status)


async def _end_stream(send: Send, last: bytes, status: int) -> int:
    if last:
        await send({"type": "http.response.body", "body": last, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return status


class _Left:
    __slots__ = ("gone", "watcher")

    def __init__(self) -> None:
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any], left: _Left) -> None:
    """Wait for ``http.disconnect`` (the body was read already) and cancel the request."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            left.gone = True
            task.cancel()
            return


_MODEL_DETAIL = Route(RouteKind.MODELS, Dialect.OPENAI, "GET")
_MODEL_DETAIL.index = len(ROUTES)
_OTHER_ROUTE = len(ROUTES) + 1
"""The metrics slot of a path under /v1 that is no route (answered 404)."""
_ROUTE_LABELS = (*ROUTES, "/v1/models/{model}", "other")


def _for_fallback(path: str) -> bool:
    """Whether a path that is no route goes to the mounted app (the management API
    under /api, later the console): not /v1, and not a route missing its /v1 (an
    SDK whose base URL lacks it), which the gateway answers in the route's dialect."""
    return not (path == "/v1" or path.startswith("/v1/")) and "/v1" + path not in ROUTES


def _unknown_path(path: str) -> tuple[Dialect, str]:
    """The dialect and message of a 404 for a path the gateway does not serve, with
    a hint when the client's base URL lacks /v1 or repeats it."""
    route = ROUTES.get("/v1" + path)
    if route is not None:
        return route.dialect, (
            f"Unknown path {path!r}; did you mean '/v1{path}'? The API is served under /v1: an OpenAI "
            "client's base URL ends with /v1 (an Anthropic client's is the server's address; it adds /v1)."
        )
    route = ROUTES.get(path[3:]) if path.startswith("/v1/v1/") else None
    if route is not None:
        return route.dialect, (
            f"Unknown path {path!r}; did you mean {path[3:]!r}? The client's base URL repeats /v1 (an "
            "Anthropic client adds /v1 itself: its base URL is the server's address without /v1)."
        )
    return (Dialect.ANTHROPIC if path.startswith("/v1/messages") else Dialect.OPENAI), f"Unknown path {path!r}."


def _model_entry(name: str, provider: Provider, dialect: Dialect) -> dict[str, Any]:
    if dialect is Dialect.ANTHROPIC:
        return {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
    return {"id": name, "object": "model", "created": 0, "owned_by": provider.name}


def _peek_body(body: bytes) -> tuple[str, bool]:
    # JSON is UTF-8 (RFC 8259 §8.1), but the peek skips the fields it does not read
    # without decoding them: check the whole body first (isascii is the cheap common case).
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadRequest(
                Kinds.INVALID_JSON, f"The request body is not valid UTF-8 (byte {exc.start}); JSON must be UTF-8."
            ) from None
    try:
        peek = _peek(body)
    except msgspec.ValidationError as exc:
        raise _BadRequest(Kinds.BAD_REQUEST, f"Invalid request body: {exc}.") from None
    except msgspec.DecodeError as exc:
        raise _BadRequest(Kinds.INVALID_JSON, f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:  # msgspec's answer to arrays or objects nested ~1000 deep
        raise _BadRequest(Kinds.INVALID_JSON, "The request body is not valid JSON: nested too deeply.") from None
    if not peek.model:
        raise _BadRequest(Kinds.BAD_REQUEST, "You must provide a model parameter.", "model")
    return peek.model, bool(peek.stream)


def _mismatch_message(model: str, provider: Provider, route: Route) -> str:
    where = (
        "/v1/messages" if route.dialect is Dialect.OPENAI else "the OpenAI-compatible routes (/v1/chat/completions, …)"
    )
    api = "OpenAI" if route.dialect is Dialect.OPENAI else "Anthropic"
    return (
        f"The model '{model}' is served by provider '{provider.name}' ({provider.type}), which does not speak "
        f"the {api} API of {route.path}; call it on {where}."
    )


def _relay_headers(received: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The upstream's headers to relay (names lower-cased by the upstream client, values
    checked by it: valid in an ASGI message), and whether the body is an SSE stream."""
    out = []
    sse = False
    for name, value in received:
        if name in _DROP_RESPONSE:
            continue
        if name in _UPSTREAM_ID_HEADERS:
            out.append((b"x-upstream-request-id", value))
            continue
        if name == b"content-type" and value.startswith(_SSE_PREFIX):
            sse = True
        out.append((name, value))
    return out, sse


def _common_headers(rid: str, dialect: Dialect, decision: Any) -> list[tuple[bytes, bytes]]:
    rid_b = rid.encode()
    headers = [(b"x-request-id", rid_b)]
    if dialect is Dialect.ANTHROPIC:
        headers.append((b"request-id", rid_b))
    if decision is not None and decision.limit is not None:
        add_rate_limit_headers(headers, decision)
    return headers


async def _send_response(
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    rid: str,
    dialect: Dialect,
    decision: Any,
    *,
    head: bool = False,
) -> None:
    headers = headers + _common_headers(rid, dialect, decision)
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


async def _send_error(
    send: Send,
    dialect: Dialect,
    kind: ErrorKind,
    message: str,
    rid: str,
    decision: Any,
    param: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [_CT_JSON]
    if extra:
        headers += extra
    await _send_response(
        send, kind.status, headers, error_body(dialect, kind, message, rid, param), rid, dialect, decision
    )


def create_app(settings: Settings, *, open_core: CoreOpener | None = None, fallback: ASGIApp | None = None) -> Gateway:
    """The gateway app for ``settings``. ``open_core`` replaces ``Core.from_settings`` (tests);
    ``fallback`` receives every request outside ``/v1`` (the management API, later the
    console) except a ``/v1`` route's path without its ``/v1`` (``/chat/completions``:
    an SDK's base URL lacking it), which the gateway answers with a 404 in the route's
    dialect. If it has ``async startup(core)`` / ``async shutdown()``, they are called
    from the gateway's lifespan, after the core is open and before it is closed."""
    return Gateway(settings, open_core=open_core, fallback=fallback)
