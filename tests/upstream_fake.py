"""A fake OpenAI + Anthropic upstream on loopback, for the end-to-end tests.

This is the *upstream* the gateway proxies to, not the gateway's built-in ``mock``
provider: it speaks both vendors' wire formats well enough for the official SDKs to
parse what the gateway relays, and it records every request it receives (method,
path, headers exactly as sent, body bytes) so a test can check what crossed the
gateway: the body byte for byte, the provider's credentials in place of the
caller's ``sk-ar-`` key, nothing forwarded for a refused request.

Routes (both dialects on one port):

* ``POST /v1/chat/completions`` — JSON, or SSE when ``"stream": true`` (a final
  usage chunk when ``stream_options.include_usage``), then ``data: [DONE]``.
* ``POST /v1/completions`` — JSON or SSE.
* ``POST /v1/embeddings`` — floats, or base64 when ``encoding_format`` asks for it.
* ``POST /v1/responses`` — JSON, or the SSE event sequence ending in
  ``response.completed`` (which carries the usage).
* ``GET /v1/models`` — the OpenAI list format.
* ``POST /v1/messages`` — JSON, or SSE ``message_start`` / ``content_block_*`` /
  ``message_delta`` (output usage) / ``message_stop``.
* ``POST /v1/messages/count_tokens`` — ``{"input_tokens": N}``.

Behaviour is chosen per model name with :meth:`FakeUpstream.on`, so tests that share
one gateway and one fake never step on each other: a rule can fail with a status and
body, delay the answer (the gateway's timeout then gives 504), stream slowly (for
the mid-stream disconnect test), fix the usage numbers, or set the number of chunks.
A stream the gateway closes early is recorded as such (``closed_early``), so a test
can prove a client disconnect cancelled the upstream request. A "down" upstream is
:func:`refused_port`: a bound socket that never listens, so connecting is refused.

A misbehaving upstream is the second listener, ``raw_base_url``: a plain TCP server
that reads each request (recorded like the others, with ``raw=True``) and writes the
bytes :meth:`FakeUpstream.raw` set for its model, exactly as given (invalid heads,
redirects, streams cut short, nothing at all), then keeps the connection for the
next request or closes it. Pieces are written one at a time, a number between them
meaning "sleep this long".

The server runs on its own asyncio loop in a daemon thread (aiohttp.web); start it
with :meth:`FakeUpstream.start` and stop it with :meth:`FakeUpstream.stop`, or use it
as a context manager. ``python tests/upstream_fake.py --port N`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.threaded_server import ThreadedServer

TEXT = "Hello from the fake upstream, relayed through the gateway."
LONGEST_WAIT = 30.0
"""No sleep in the fake lasts longer than this, whatever a rule asks."""


@dataclass(frozen=True)
class Rule:
    """What the fake does for requests naming one model."""

    status: int | None = None
    """Answer with this status and ``body`` instead of a success."""
    body: bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    """Seconds to wait before sending the response head."""
    chunk_delay: float = 0.0
    """Seconds to wait after each streamed event."""
    chunks: int = 4
    """Content pieces in a streamed answer (the text is split into this many)."""
    usage: tuple[int, int] | None = None
    """(input tokens, output tokens); by default derived from the body length."""


@dataclass(frozen=True)
class RawAnswer:
    """What the raw listener writes for one model."""

    pieces: tuple[bytes | float, ...]
    """Bytes written in turn; a number sleeps that many seconds."""
    close: bool = True
    """Close the connection afterwards (else read the next request on it)."""


@dataclass
class Recorded:
    """One request as the fake received it, and what became of it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    """Every header line, names as sent, in order."""
    body: bytes
    peer: tuple[str, int] | None
    received_at: float
    json: Any = None
    model: str | None = None
    stream: bool = False
    status: int | None = None
    usage: tuple[int, int] | None = None
    """(input, output) tokens the fake reported in its answer, if any."""
    finished: bool = False
    """The whole answer was written (a stream up to its last event)."""
    closed_early: bool = False
    """The gateway closed the connection before the answer was complete."""
    events_sent: int = 0
    closed_at: float | None = None
    raw: bool = False
    """Received by the raw listener (``FakeUpstream.raw``)."""

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]


def refused_port() -> tuple[socket.socket, int]:
    """A loopback port on which a connection is refused: bound, never listening.

    Keep the returned socket open for as long as the port must stay "down" (the
    binding stops anything else from taking it), then close it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _pieces(text: str, n: int) -> list[str]:
    n = max(1, n)
    step = max(1, -(-len(text) // n))
    return [text[i : i + step] for i in range(0, len(text), step)]


class FakeUpstream(ThreadedServer):
    """The fake server; see the module docstring."""

    label = "the fake upstream"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.host = host
        self._want_port = port
        self.port = 0
        self.requests: list[Recorded] = []
        self._rules: dict[str, Rule] = {}
        self._raw: dict[str, RawAnswer] = {}
        self.raw_port = 0
        self._raw_server: asyncio.Server | None = None
        self._lock = threading.Lock()
        self._counter = 0
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def raw_base_url(self) -> str:
        return f"http://{self.host}:{self.raw_port}"

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        # handler_cancellation: a connection the gateway drops cancels the handler,
        # which is how a delayed or streaming answer learns it was abandoned.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._want_port))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._raw_server = await asyncio.start_server(self._raw_connection, self.host, 0)
        self.raw_port = self._raw_server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._raw_server is not None:
            self._raw_server.close()
            self._raw_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------ test controls

    def on(self, model: str, **rule: Any) -> None:
        """Set the behaviour for requests naming ``model`` (see :class:`Rule`)."""
        with self._lock:
            self._rules[model] = Rule(**rule)

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()
            self._raw.clear()

    def raw(self, model: str, *pieces: bytes | float, close: bool = True) -> None:
        """What the raw listener (``raw_base_url``) writes for requests naming ``model``."""
        with self._lock:
            self._raw[model] = RawAnswer(tuple(pieces), close)

    def mark(self) -> int:
        """A position in the record; pass it to :meth:`since`."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[Recorded]:
        with self._lock:
            return list(self.requests[mark:])

    def for_model(self, model: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.model == model]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` (bounded by ``timeout``) until it holds."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # ------------------------------------------------------------ helpers

    def _rule(self, model: str | None) -> Rule:
        with self._lock:
            return self._rules.get(model or "", Rule())

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    async def _record(self, request: web.Request) -> Recorded:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        rec = Recorded(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=headers,
            body=body,
            peer=tuple(peer[:2]) if peer else None,
            received_at=time.monotonic(),
        )
        if body:
            try:
                rec.json = json.loads(body)
            except ValueError:
                rec.json = None
        if isinstance(rec.json, dict):
            model = rec.json.get("model")
            rec.model = model if isinstance(model, str) else None
            rec.stream = rec.json.get("stream") is True
        with self._lock:
            self.requests.append(rec)
        return rec

    @staticmethod
    def _usage_for(rec: Recorded, rule: Rule, output: int) -> tuple[int, int]:
        if rule.usage is not None:
            return rule.usage
        return (len(rec.body) // 8 + 3, output)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(min(seconds, LONGEST_WAIT))

    async def _prelude(self, request: web.Request) -> tuple[Recorded, Rule, web.Response | None]:
        """Record, apply the rule's delay and failure; a Response means "send this"."""
        rec = await self._record(request)
        rule = self._rule(rec.model)
        try:
            await self._sleep(rule.delay)
        except asyncio.CancelledError:
            rec.closed_early = True
            rec.closed_at = time.monotonic()
            raise
        if rec.json is None or not isinstance(rec.json, dict):
            rec.status = 400
            return (
                rec,
                rule,
                web.json_response(
                    {"error": {"message": "fake upstream: body is not a JSON object", "type": "invalid_request_error"}},
                    status=400,
                ),
            )
        if rule.status is not None:
            rec.status = rule.status
            rec.finished = True
            return rec, rule, web.Response(status=rule.status, body=rule.body or b"", content_type=rule.content_type)
        return rec, rule, None

    async def _stream(self, request: web.Request, rec: Recorded, rule: Rule, events: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        rec.status = 200
        try:
            await resp.prepare(request)
            for event in events:
                await resp.write(event)
                rec.events_sent += 1
                await self._sleep(rule.chunk_delay)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            rec.closed_early = True
            rec.closed_at = time.monotonic()
            raise
        rec.finished = True
        return resp

    def _done(self, rec: Recorded, payload: Any, status: int = 200) -> web.Response:
        rec.status = status
        rec.finished = True
        return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")

    # ---------------------------------------------------------- OpenAI

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec, rule, early = await self._prelude(request)
        if early is not None:
            return early
        n = self._next_id()
        model = rec.model or "unknown"
        created = int(time.time())
        pieces = _pieces(TEXT, rule.chunks)
        rec.usage = self._usage_for(rec, rule, len(pieces))
        usage = {"prompt_tokens": rec.usage[0], "completion_tokens": rec.usage[1], "total_tokens": sum(rec.usage)}
        if not rec.stream:
            return self._done(
                rec,
                {
                    "id": f"chatcmpl-fake-{n}",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": TEXT, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                },
            )
        include_usage = bool((rec.json.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body: dict[str, Any] = {
                "id": f"chatcmpl-fake-{n}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                body["usage"] = None
            return _sse(body)

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": p}) for p in pieces]
        events.append(chunk({}, "stop"))
        if include_usage:
            events.append(
                _sse(
                    {
                        "id": f"chatcmpl-fake-{n}",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        else:
            rec.usage = None  # nothing reported to the client
        events.append(_sse("[DONE]"))
        return await self._stream(request, rec, rule, events)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        rec, rule, early = await self._prelude(request)
        if early is not None:
            return early
        n = self._next_id()
        model = rec.model or "unknown"
        created = int(time.time())
        pieces = _pieces(TEXT, rule.chunks)
        rec.usage = self._usage_for(rec, rule, len(pieces))
        usage = {"prompt_tokens": rec.usage[0], "completion_tokens": rec.usage[1], "total_tokens": sum(rec.usage)}

        def body(text: str, finish: str | None, with_usage: bool) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": f"cmpl-fake-{n}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            }
            if with_usage:
                out["usage"] = usage
            return out

        if not rec.stream:
            return self._done(rec, body(TEXT, "stop", True))
        include_usage = bool((rec.json.get("stream_options") or {}).get("include_usage"))
        events = [_sse(body(p, None, False)) for p in pieces]
        events.append(_sse(body("", "stop", False)))
        if include_usage:
            final = body("", None, True)
            final["choices"] = []
            events.append(_sse(final))
        else:
            rec.usage = None
        events.append(_sse("[DONE]"))
        return await self._stream(request, rec, rule, events)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        rec, rule, early = await self._prelude(request)
        if early is not None:
            return early
        raw_input = rec.json.get("input")
        inputs = raw_input if isinstance(raw_input, list) else [raw_input]
        as_base64 = rec.json.get("encoding_format") == "base64"
        data = []
        for i in range(len(inputs)):
            vector = [round(0.125 * (i + 1) + 0.001 * k, 6) for k in range(8)]
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        rec.usage = (self._usage_for(rec, rule, 0)[0], 0)
        return self._done(
            rec,
            {
                "object": "list",
                "data": data,
                "model": rec.model,
                "usage": {"prompt_tokens": rec.usage[0], "total_tokens": rec.usage[0]},
            },
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        rec, rule, early = await self._prelude(request)
        if early is not None:
            return early
        n = self._next_id()
        pieces = _pieces(TEXT, rule.chunks)
        rec.usage = self._usage_for(rec, rule, len(pieces))
        resp_id, msg_id = f"resp_fake{n}", f"msg_fake{n}"

        def response(status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
            return {
                "id": resp_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "error": None,
                "incomplete_details": None,
                "instructions": None,
                "model": rec.model,
                "output": output,
                "parallel_tool_calls": True,
                "temperature": 1.0,
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "usage": usage,
                "metadata": {},
            }

        part = {"type": "output_text", "text": TEXT, "annotations": []}
        message = {"type": "message", "id": msg_id, "status": "completed", "role": "assistant", "content": [part]}
        usage = {
            "input_tokens": rec.usage[0],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": rec.usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": sum(rec.usage),
        }
        if not rec.stream:
            return self._done(rec, response("completed", [message], usage))
        seq = iter(range(10_000))
        events = [
            _sse(
                {
                    "type": "response.created",
                    "sequence_number": next(seq),
                    "response": response("in_progress", [], None),
                },
                "response.created",
            ),
            _sse(
                {
                    "type": "response.in_progress",
                    "sequence_number": next(seq),
                    "response": response("in_progress", [], None),
                },
                "response.in_progress",
            ),
            _sse(
                {
                    "type": "response.output_item.added",
                    "sequence_number": next(seq),
                    "output_index": 0,
                    "item": {**message, "status": "in_progress", "content": []},
                },
                "response.output_item.added",
            ),
            _sse(
                {
                    "type": "response.content_part.added",
                    "sequence_number": next(seq),
                    "item_id": msg_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": {**part, "text": ""},
                },
                "response.content_part.added",
            ),
        ]
        for p in pieces:
            events.append(
                _sse(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        "item_id": msg_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": p,
                        "logprobs": [],
                    },
                    "response.output_text.delta",
                )
            )
        events += [
            _sse(
                {
                    "type": "response.output_text.done",
                    "sequence_number": next(seq),
                    "item_id": msg_id,
                    "output_index": 0,
                    "content_index": 0,
                    "text": TEXT,
                    "logprobs": [],
                },
                "response.output_text.done",
            ),
            _sse(
                {
                    "type": "response.content_part.done",
                    "sequence_number": next(seq),
                    "item_id": msg_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                },
                "response.content_part.done",
            ),
            _sse(
                {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0, "item": message},
                "response.output_item.done",
            ),
            _sse(
                {
                    "type": "response.completed",
                    "sequence_number": next(seq),
                    "response": response("completed", [message], usage),
                },
                "response.completed",
            ),
        ]
        return await self._stream(request, rec, rule, events)

    async def _models(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        models = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
        return self._done(
            rec,
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in models],
            },
        )

    # ------------------------------------------------------- Anthropic

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec, rule, early = await self._prelude(request)
        if early is not None:
            return early
        n = self._next_id()
        pieces = _pieces(TEXT, rule.chunks)
        rec.usage = self._usage_for(rec, rule, len(pieces))
        msg_id = f"msg_fake{n:020d}"
        if not rec.stream:
            return self._done(
                rec,
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": rec.model,
                    "content": [{"type": "text", "text": TEXT}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": rec.usage[0], "output_tokens": rec.usage[1]},
                },
            )
        events = [
            _sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": rec.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": rec.usage[0], "output_tokens": 1},
                    },
                },
                "message_start",
            ),
            _sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            ),
            _sse({"type": "ping"}, "ping"),
        ]
        for p in pieces:
            events.append(
                _sse(
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                    "content_block_delta",
                )
            )
        events += [
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": rec.usage[1]},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]
        return await self._stream(request, rec, rule, events)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        rec, rule, early = await self._prelude(request)
        if early is not None:
            return early
        count = rule.usage[0] if rule.usage else len(rec.body) // 8 + 3
        return self._done(rec, {"input_tokens": count})

    async def _raw_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length)
                path, _, query = target.partition("?")
                peer = writer.get_extra_info("peername")
                rec = Recorded(
                    method=method,
                    path=path,
                    query=query,
                    headers=headers,  # type: ignore[arg-type]
                    body=body,
                    peer=tuple(peer[:2]) if peer else None,
                    received_at=time.monotonic(),
                    raw=True,
                )
                try:
                    rec.json = json.loads(body)
                    rec.model = rec.json.get("model")
                    rec.stream = rec.json.get("stream") is True
                except (ValueError, AttributeError):
                    pass
                with self._lock:
                    self.requests.append(rec)
                    answer = self._raw.get(rec.model or "", RawAnswer((b"HTTP/1.1 404 Not Found\r\n\r\n",)))
                for piece in answer.pieces:
                    if isinstance(piece, bytes):
                        writer.write(piece)
                        await writer.drain()
                    else:
                        await self._sleep(piece)
                rec.finished = True
                if answer.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _unknown(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        return self._done(
            rec,
            {"error": {"message": f"fake upstream: no route {request.method} {request.path}", "type": "not_found"}},
            status=404,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake OpenAI + Anthropic upstream on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeUpstream(args.host, args.port).start()
    print(f"fake upstream on {fake.base_url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
