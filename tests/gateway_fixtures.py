"""Helpers for the gateway's own tests: the app on a private data dir, an ASGI driver,
and a fake upstream (aiohttp on loopback, in the test's event loop).

The ASGI driver (``call``) talks to the app the way Granian does and records every
message with the time it was sent, so tests can check that streams are relayed
chunk by chunk and that a disconnect cancels the upstream request. The official
SDKs are pointed at the app through ``httpx2.ASGITransport`` (``sdk_clients``; both
SDKs are built on httpx2).
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import anthropic
import httpx2
import msgspec
import openai
import pytest
from aiohttp import web

from agentrouter._core import FakeClock
from agentrouter.config import Settings, load_settings
from agentrouter.core import Core
from agentrouter.gateway.app import Gateway, create_app

SECRET = "gateway-test-secret-0123456789abcdef0123456789"


def settings_for(data_dir: Path, toml: str | None = None, **env: str) -> Settings:
    """Settings from an optional TOML text and ``AGENTROUTER_*`` values, on ``data_dir``,
    with the test secret."""
    path = None
    if toml is not None:
        path = data_dir.parent / "agentrouter.toml"
        path.write_text(toml)
    return load_settings(path, env={"AGENTROUTER_DATA_DIR": str(data_dir), "AGENTROUTER_SECRET": SECRET, **env})


async def start_gateway(settings: Settings, clock: FakeClock | None = None) -> Gateway:
    """The app with its lifespan startup done, on a core opened from ``settings`` (the
    test secret) on ``clock``."""

    async def open_core(s: Settings) -> Core:
        return await Core.from_settings(s, clock=clock)

    app = create_app(settings, open_core=open_core)
    await app.startup()
    return app


async def new_key(app: Gateway, **options: Any) -> tuple[str, str]:
    """(raw key, key id), created through the key service as the CLI would."""
    created = await app.core.keys.create(**options)
    return created.key, created.row.id


async def stored_usage(app: Gateway, key_id: str) -> Any:
    """The key's usage totals in the store, after writing what the app gathered."""
    assert app.usage is not None
    await app.usage.flush()
    return (await app.core.keys.get(key_id)).usage


# ------------------------------------------------------------------ ASGI driver


class Reply:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[tuple[float, bytes]] = []
        self.done = asyncio.Event()
        self.started = asyncio.Event()

    @property
    def body(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    body_parts: Sequence[bytes] | None = None,
    query: bytes = b"",
    disconnect: asyncio.Event | None = None,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    reply: Reply | None = None,
) -> Reply:
    """One request through the ASGI app, as Granian sends it.

    ``body_parts`` sends the body in several ``http.request`` messages; setting
    ``disconnect`` makes ``receive`` answer ``http.disconnect`` (the client left).
    """
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs],
        "client": client,
        "server": ("127.0.0.1", 8080),
    }
    parts = list(body_parts) if body_parts is not None else [body]
    reply = reply or Reply()
    left = disconnect or asyncio.Event()

    async def receive() -> dict[str, Any]:
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
        waiters = [asyncio.ensure_future(left.wait()), asyncio.ensure_future(reply.done.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.raw_headers = list(message["headers"])
            reply.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            reply.started.set()
        elif message["type"] == "http.response.body":
            if message.get("body"):
                reply.chunks.append((time.monotonic(), message["body"]))
            if not message.get("more_body", False):
                reply.done.set()

    await app(scope, receive, send)
    return reply


def sdk_clients(app: Any, key: str, **options: Any) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    """The official async SDKs, talking to the app in-process."""
    options.setdefault("max_retries", 0)
    transport = httpx2.ASGITransport(app=app, client=("127.0.0.1", 50001))
    o = openai.AsyncOpenAI(
        api_key=key, base_url="http://gateway.test/v1", http_client=httpx2.AsyncClient(transport=transport), **options
    )
    a = anthropic.AsyncAnthropic(
        api_key=key, base_url="http://gateway.test", http_client=httpx2.AsyncClient(transport=transport), **options
    )
    return o, a


# ------------------------------------------------------------------ fake upstream


class Seen:
    """One request the fake upstream received."""

    def __init__(self, request: web.Request, body: bytes) -> None:
        self.method = request.method
        self.path = request.path
        self.query = request.query_string
        self.headers = dict(request.headers)
        self.lower_headers = {k.lower(): v for k, v in request.headers.items()}
        self.body = body
        self.finished = False
        self.cancelled = False


Handler = Callable[[web.Request, Seen], Awaitable[web.StreamResponse]]


class FakeUpstream:
    """An aiohttp server on a loopback port. ``routes[path] = handler`` decides the answer;
    ``seen`` lists what arrived."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client (the gateway) hanging up cancels the handler,
        # which is how the tests see an upstream request cancelled.
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request, await request.read())
        self.seen.append(seen)
        handler = self.routes.get(request.path)
        if handler is None:
            return web.json_response({"error": "no handler"}, status=500)
        try:
            response = await handler(request, seen)
        except (asyncio.CancelledError, ConnectionResetError):
            seen.cancelled = True  # the gateway hung up (while waiting, or mid-stream)
            raise
        seen.finished = True
        return response


def json_handler(
    payload: Any, status: int = 200, delay: float = 0.0, headers: Mapping[str, str] | None = None
) -> Handler:
    async def handler(request: web.Request, seen: Seen) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        return web.Response(body=body, status=status, content_type="application/json", headers=headers)

    return handler


def sse_handler(events: Sequence[bytes], gap: float = 0.0, first_delay: float = 0.0) -> Handler:
    """Streams ``events`` one write each, ``gap`` seconds apart."""

    async def handler(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if first_delay:
            await asyncio.sleep(first_delay)
        for i, event in enumerate(events):
            if i and gap:
                await asyncio.sleep(gap)
            await response.write(event)
        await response.write_eof()
        return response

    return handler


class GatedStream:
    """An SSE answer whose events the test lets out one at a time (``release``), so a
    test can check what reached the client before the upstream wrote the next one."""

    def __init__(self, events: Sequence[bytes]) -> None:
        self.events = list(events)
        self.written = 0
        self._allowed = 0
        self._changed = asyncio.Event()

    def release(self, n: int = 1) -> None:
        self._allowed += n
        self._changed.set()

    async def handler(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while self.written < len(self.events):
            while self._allowed <= self.written:
                self._changed.clear()
                await self._changed.wait()
            await response.write(self.events[self.written])
            self.written += 1
        await response.write_eof()
        return response


def refused_port() -> int:
    """A loopback port with nothing listening (bound, never listened: connect is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ pytest fixtures
# A plugin registered in tests/conftest.py: a test asks for them by name.


@pytest.fixture
def gw_clock() -> FakeClock:
    return FakeClock(unix=time.time())


@pytest.fixture
async def gw(tmp_path: Path, gw_clock: FakeClock) -> AsyncIterator[Gateway]:
    """A started app on the default settings (the mock provider), on a fake clock."""
    data_dir = tmp_path / "data"
    app = await start_gateway(settings_for(data_dir), gw_clock)
    try:
        yield app
    finally:
        await app.shutdown()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = await FakeUpstream().start()
    try:
        yield server
    finally:
        await server.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback TCP (or, given ``ssl``, TLS) server whose handler reads requests and writes raw bytes."""

    def __init__(self, handler: Handler, *, ssl: ssl_module.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl = ssl
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl_module.SSLError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body
