"""Misbehaving upstreams as the caller sees them through the app (the ASGI driver and
the official SDKs in-process): an answer that breaks HTTP/1.1, a 101, a head over
64 KiB, a redirect, a 200 whose body is not JSON, are each a 502 in the caller's
dialect, logged with the provider's name; a stream cut or stalled mid-way ends with
the dialect's error event and counts as a failure; absurd usage numbers count 0.

The upstream here is a raw loopback server that writes scripted bytes, chosen by
the request's model."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anthropic
import msgspec
import openai
import pytest

from agentrouter.gateway.app import Gateway
from tests.gateway_fixtures import (
    RawServer,
    Reply,
    call,
    new_key,
    sdk_clients,
    settings_for,
    start_gateway,
    stored_usage,
)

Writer = Callable[[asyncio.StreamWriter], Awaitable[bool]]
"""Writes an answer; returns whether the connection stays open for another request."""


def config(port: int, read_timeout: float = 5.0) -> str:
    return f"""
[[providers]]
name = "raw-oai"
type = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "sk-up"
models = ["gpt-*"]
read_timeout = {read_timeout}

[[providers]]
name = "raw-ant"
type = "anthropic"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "sk-ant-up"
models = ["claude-*"]
read_timeout = {read_timeout}
"""


class Scripted:
    """A raw upstream: ``answers[model]`` writes the answer to a request for ``model``."""

    def __init__(self) -> None:
        self.answers: dict[str, Writer] = {}
        self.seen: list[bytes] = []
        self.server = RawServer(self._handle)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await self.server.read_request(reader)
            self.seen.append(self.server.requests[-1])
            model = json.loads(body).get("model", "")
            if not await self.answers[model](writer):
                return


def raw(data: bytes, keep: bool = True) -> Writer:
    async def write(writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep

    return write


def pieces(*parts: bytes | float, keep: bool = False) -> Writer:
    """Writes each bytes part, sleeps each float part; then closes the connection
    unless ``keep``."""

    async def write(writer: asyncio.StreamWriter) -> bool:
        for part in parts:
            if isinstance(part, float):
                await asyncio.sleep(part)
            else:
                writer.write(part)
                await writer.drain()
        return keep

    return write


def json_answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + b"".join(h + b"\r\n" for h in headers))
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


CHAT = msgspec.json.encode(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
)


@pytest.fixture
async def upstream() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    async with scripted.server:
        yield scripted


@pytest.fixture
async def gw(tmp_path: Path, upstream: Scripted) -> AsyncIterator[Gateway]:
    app = await start_gateway(settings_for(tmp_path / "data", config(upstream.server.port, read_timeout=0.5)))
    try:
        yield app
    finally:
        await app.shutdown()


async def chat(gw: Gateway, key: str, model: str, **extra: object) -> Reply:
    body = msgspec.json.encode({"model": model, "messages": [], **extra})
    return await call(gw, "POST", "/v1/chat/completions", body=body, headers={"authorization": f"Bearer {key}"})


async def message(gw: Gateway, key: str, model: str, **extra: object) -> Reply:
    body = msgspec.json.encode({"model": model, "max_tokens": 5, "messages": [], **extra})
    return await call(gw, "POST", "/v1/messages", body=body, headers={"x-api-key": key})


def openai_error(reply: Reply) -> dict[str, object]:
    body = reply.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    return error


def anthropic_error(reply: Reply) -> dict[str, object]:
    body = reply.json()
    assert body["type"] == "error", body
    error: dict[str, object] = body["error"]
    return error


def logged(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentrouter.gateway" and all(w in r.getMessage() for w in words)
    ]


# ------------------------------------------------------------------ invalid answers

INVALID = {
    "CR in a value": json_answer(b"{}", b"X-A: a\rb"),
    "NUL in a value": json_answer(b"{}", b"X-A: a\x00b"),
    "LF in a value": json_answer(b"{}", b"X-A: a\nb"),
    "DEL in a value": json_answer(b"{}", b"X-A: a\x7f"),
    "space in a name": json_answer(b"{}", b"X A: 1"),
    "non-token name": json_answer(b"{}", b"X/A: 1"),
    "obs-fold": json_answer(b"{}", b"X-A: 1", b" folded"),
    "101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "head over 64 KiB": json_answer(b"{}", b"X-Big: " + b"a" * 70_000),
    "Content-Length +2": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
    "gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "CL and TE": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "chunk size 0x2": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    "HTTP/2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("name", list(INVALID))
async def test_invalid_answer_is_502_in_the_dialect(
    gw: Gateway, upstream: Scripted, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    upstream.answers["gpt-bad"] = raw(INVALID[name])
    upstream.answers["claude-bad"] = raw(INVALID[name])
    upstream.answers["gpt-ok"] = raw(json_answer(CHAT))
    key, key_id = await new_key(gw)
    caplog.set_level(logging.WARNING, "agentrouter.gateway")

    reply = await chat(gw, key, "gpt-bad")
    assert reply.status == 502
    err = openai_error(reply)
    assert err["code"] == "upstream_invalid_response" and err["type"] == "server_error"
    assert "raw-oai" in str(err["message"]) and "invalid" in str(err["message"])
    assert logged(caplog, "raw-oai", "invalid answer")
    reply = await message(gw, key, "claude-bad")
    assert reply.status == 502
    assert anthropic_error(reply)["type"] == "api_error"
    assert logged(caplog, "raw-ant", "invalid answer")

    # The refused answer's connection was closed: the next request opens a new one.
    before = upstream.server.connections
    reply = await chat(gw, key, "gpt-ok")
    assert reply.status == 200 and upstream.server.connections == before + 1
    assert (await stored_usage(gw, key_id)).failures_5xx == 2


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
async def test_redirect_is_502_never_relayed(
    gw: Gateway, upstream: Scripted, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    answer = json_answer(b"{}", b"Location: http://elsewhere.example/v1/chat/completions", status=b"%d Moved" % status)
    upstream.answers["gpt-moved"] = raw(answer)
    upstream.answers["claude-moved"] = raw(answer)
    key, key_id = await new_key(gw)
    caplog.set_level(logging.WARNING, "agentrouter.gateway")
    o, a = sdk_clients(gw, key)
    with pytest.raises(openai.InternalServerError) as oe:
        await o.chat.completions.create(model="gpt-moved", messages=[])
    assert oe.value.status_code == 502 and "location" not in oe.value.response.headers
    err = oe.value.response.json()["error"]
    assert err["code"] == "upstream_redirect" and "raw-oai" in err["message"] and "redirect" in err["message"]
    with pytest.raises(anthropic.InternalServerError) as ae:
        await a.messages.create(model="claude-moved", max_tokens=5, messages=[])
    assert ae.value.status_code == 502 and "location" not in ae.value.response.headers
    assert ae.value.response.json()["error"]["type"] == "api_error"
    assert logged(caplog, "raw-oai", "redirect", "elsewhere.example") and logged(caplog, "raw-ant", "redirect")
    assert (await stored_usage(gw, key_id)).failures_5xx == 2


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b'{"id": "c1", "choices": [', b'{"a": "\xff\xfe"}', b"", b"[1, 2]", b"null"],
    ids=["html", "truncated", "not UTF-8", "empty", "an array", "null"],
)
async def test_200_whose_body_is_not_json_is_502(
    gw: Gateway, upstream: Scripted, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    upstream.answers["gpt-junk"] = raw(json_answer(body))
    upstream.answers["claude-junk"] = raw(json_answer(body))
    key, key_id = await new_key(gw)
    caplog.set_level(logging.WARNING, "agentrouter.gateway")
    o, a = sdk_clients(gw, key)
    with pytest.raises(openai.InternalServerError) as oe:
        await o.chat.completions.create(model="gpt-junk", messages=[])
    assert oe.value.status_code == 502
    err = oe.value.response.json()["error"]
    assert err["code"] == "upstream_invalid_response" and "not a JSON object" in err["message"]
    with pytest.raises(anthropic.InternalServerError) as ae:
        await a.messages.create(model="claude-junk", max_tokens=5, messages=[])
    assert ae.value.response.json()["error"]["type"] == "api_error"
    assert logged(caplog, "raw-oai", "not a JSON object")
    assert (await stored_usage(gw, key_id)).failures_5xx == 2


async def test_error_statuses_keep_their_body_as_is(gw: Gateway, upstream: Scripted) -> None:
    """Only a 2xx must be JSON: a 5xx with an HTML body is relayed (the SDKs cope)."""
    upstream.answers["gpt-html"] = raw(json_answer(b"<html>oops</html>", status=b"503 Unavailable"))
    key, _ = await new_key(gw)
    reply = await chat(gw, key, "gpt-html")
    assert reply.status == 503 and reply.body == b"<html>oops</html>"


async def test_retry_after_ms_relayed_with_retry_after(gw: Gateway, upstream: Scripted) -> None:
    for status in (b"429 Too Many Requests", b"503 Unavailable"):
        upstream.answers["gpt-busy"] = raw(
            json_answer(
                b'{"error": {"message": "slow down"}}', b"Retry-After: 2", b"retry-after-ms: 1500", status=status
            )
        )
        key, _ = await new_key(gw, requests=100, interval=60)
        o, _ = sdk_clients(gw, key)
        with pytest.raises(openai.APIStatusError) as oe:
            await o.chat.completions.create(model="gpt-busy", messages=[])
        headers = oe.value.response.headers
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
        assert headers.get_list("retry-after-ms") == ["1500"]
        assert headers["x-ratelimit-limit"] == "100"  # the gateway's own, not the upstream's


# ------------------------------------------------------------------ usage numbers


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": -5, "completion_tokens": 7}, (0, 7)),
        ({"prompt_tokens": 1.5, "completion_tokens": True}, (0, 0)),
        ({"prompt_tokens": 10**12, "completion_tokens": 3}, (0, 3)),
        ({"prompt_tokens": "4", "completion_tokens": None}, (0, 0)),
        ({"input_tokens": 4, "cache_read_input_tokens": -4, "output_tokens": 2}, (4, 2)),
    ],
)
async def test_absurd_usage_counts_zero_logged_once(
    gw: Gateway,
    upstream: Scripted,
    caplog: pytest.LogCaptureFixture,
    usage: dict[str, object],
    expected: tuple[int, int],
) -> None:
    body = msgspec.json.encode({"id": "c1", "object": "chat.completion", "choices": [], "usage": usage})
    upstream.answers["gpt-odd"] = raw(json_answer(body))
    key, key_id = await new_key(gw)
    caplog.set_level(logging.WARNING, "agentrouter.gateway")
    for _ in range(3):
        reply = await chat(gw, key, "gpt-odd")
        assert reply.status == 200 and reply.body == body
    totals = await stored_usage(gw, key_id)
    assert (totals.input_tokens, totals.output_tokens) == (expected[0] * 3, expected[1] * 3)
    assert totals.input_tokens >= 0 and totals.successes == 3
    assert len(logged(caplog, "raw-oai", "usage")) == 1  # once per provider, not per request


async def test_absurd_usage_in_a_stream_counts_zero(gw: Gateway, upstream: Scripted) -> None:
    events = (
        b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":-100,"completion_tokens":5}}\n\n'
        b"data: [DONE]\n\n"
    )
    upstream.answers["gpt-odd"] = raw(sse_head() + chunk(events) + b"0\r\n\r\n")
    key, key_id = await new_key(gw)
    reply = await chat(gw, key, "gpt-odd", stream=True)
    assert reply.status == 200 and reply.body == events
    totals = await stored_usage(gw, key_id)
    assert (totals.input_tokens, totals.output_tokens) == (0, 5)


# ------------------------------------------------------------------ streams cut short


def sse_head(framing: bytes = b"Transfer-Encoding: chunked") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + framing + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def ev(data: dict[str, object], name: str | None = None) -> bytes:
    return (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + msgspec.json.encode(data) + b"\n\n"


OPENAI_EVENTS = [
    ev(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}],
        }
    )
    for i in range(2)
]
ANTHROPIC_EVENTS = [
    ev(
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "c",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 4, "output_tokens": 1},
            },
        },
        "message_start",
    ),
    ev(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    ),
    ev(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "w0 "}},
        "content_block_delta",
    ),
]

CUTS = {
    # how the stream ends -> (bytes of the two dialects' answers, expected error type)
    "closed before the last chunk": lambda events: pieces(sse_head(), *[chunk(e) for e in events]),
    "closed mid-chunk": lambda events: pieces(sse_head(), *[chunk(e) for e in events], b"40\r\ndata: {"),
    "closed before Content-Length": lambda events: pieces(
        sse_head(b"Content-Length: 100000"), *events, b'data: {"partial'
    ),
    "close-delimited without its terminal event": lambda events: pieces(sse_head(b"Connection: close"), *events),
    "close-delimited, cut mid-event": lambda events: pieces(sse_head(b"Connection: close"), *events, b"data: {"),
    "stalled": lambda events: pieces(sse_head(), *[chunk(e) for e in events], 2.0, b"0\r\n\r\n"),
}


@pytest.mark.parametrize("how", list(CUTS))
async def test_stream_cut_ends_with_the_dialects_error_event(
    gw: Gateway, upstream: Scripted, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    upstream.answers["gpt-cut"] = CUTS[how](OPENAI_EVENTS)
    upstream.answers["claude-cut"] = CUTS[how](ANTHROPIC_EVENTS)
    stalled = how == "stalled"
    key, key_id = await new_key(gw)
    caplog.set_level(logging.WARNING, "agentrouter.gateway")

    reply = await chat(gw, key, "gpt-cut", stream=True)
    assert reply.status == 200
    body = reply.body
    assert body.startswith(b"".join(OPENAI_EVENTS)) and body.endswith(b"\n\n")
    last = body[len(b"".join(OPENAI_EVENTS)) :]
    assert last.startswith(b"data: ") and last.count(b"\n\n") == 1  # one whole event: the partial one was not relayed
    err = json.loads(last[len(b"data: ") :])["error"]
    assert err["type"] == "server_error" and "raw-oai" in err["message"]
    assert err["code"] == ("upstream_timeout" if stalled else "upstream_unavailable")

    reply = await message(gw, key, "claude-cut", stream=True)
    body = reply.body
    last = body[len(b"".join(ANTHROPIC_EVENTS)) :]
    assert body.startswith(b"".join(ANTHROPIC_EVENTS)) and last.startswith(b"event: error\ndata: ")
    assert last.count(b"\n\n") == 1 and last.endswith(b"\n\n")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == ("timeout_error" if stalled else "api_error")

    totals = await stored_usage(gw, key_id)
    assert (totals.requests, totals.successes, totals.failures_5xx) == (2, 0, 2)
    assert logged(caplog, "raw-oai", "stream") and logged(caplog, "raw-ant", "stream")


async def test_stream_cut_raises_in_both_sdks(gw: Gateway, upstream: Scripted) -> None:
    upstream.answers["gpt-cut"] = CUTS["closed before the last chunk"](OPENAI_EVENTS)
    upstream.answers["claude-cut"] = CUTS["closed before the last chunk"](ANTHROPIC_EVENTS)
    key, _ = await new_key(gw)
    o, a = sdk_clients(gw, key)
    got = []
    with pytest.raises(openai.APIError, match="raw-oai") as oe:
        async for c in await o.chat.completions.create(model="gpt-cut", messages=[], stream=True):
            got.append(c.choices[0].delta.content)
    assert got == ["w0 ", "w1 "] and not isinstance(oe.value, openai.APIStatusError)
    text = []
    with pytest.raises(anthropic.APIStatusError, match="raw-ant"):
        async with a.messages.stream(model="claude-cut", max_tokens=5, messages=[]) as s:
            async for t in s.text_stream:
                text.append(t)
    assert text == ["w0 "]


@pytest.mark.parametrize(
    "ending",
    [b"data: [DONE]\n\n", b'data: {"error": {"message": "upstream failed"}}\n\n'],
    ids=["[DONE]", "an upstream error event"],
)
async def test_close_delimited_stream_with_its_terminal_event_is_complete(
    gw: Gateway, upstream: Scripted, ending: bytes
) -> None:
    upstream.answers["gpt-done"] = pieces(sse_head(b"Connection: close"), *OPENAI_EVENTS, ending)
    upstream.answers["claude-done"] = pieces(
        sse_head(b"Connection: close"), *ANTHROPIC_EVENTS, b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    key, key_id = await new_key(gw)
    reply = await chat(gw, key, "gpt-done", stream=True)
    assert reply.body == b"".join(OPENAI_EVENTS) + ending
    reply = await message(gw, key, "claude-done", stream=True)
    assert reply.body.endswith(b'data: {"type":"message_stop"}\n\n')
    assert b"event: error" not in reply.body
    totals = await stored_usage(gw, key_id)
    assert (totals.successes, totals.failures_5xx) == (2, 0)


async def test_events_split_across_reads_are_relayed_whole(gw: Gateway, upstream: Scripted) -> None:
    """An event split over two chunks is relayed once complete (what a cut stream then
    loses is only the unfinished event, never a half one the SDK would choke on)."""
    whole = b"".join(OPENAI_EVENTS) + b"data: [DONE]\n\n"
    split = [whole[:10], 0.05, whole[10:70], 0.05, whole[70:]]
    parts: list[bytes | float] = [sse_head()]
    parts += [p if isinstance(p, float) else chunk(p) for p in split]
    upstream.answers["gpt-split"] = pieces(*parts, b"0\r\n\r\n", keep=True)
    key, _ = await new_key(gw)
    reply = await chat(gw, key, "gpt-split", stream=True)
    assert reply.body == whole
    assert all(c.endswith(b"\n\n") for _, c in reply.chunks), reply.chunks
