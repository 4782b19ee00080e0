"""Proxying to a real HTTP upstream (aiohttp on loopback): what is forwarded, how
answers and streams come back, and how upstream failures look to the caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import msgspec
import openai
import pytest

from agentrouter.gateway.app import Gateway
from tests.gateway_fixtures import (
    FakeUpstream,
    GatedStream,
    Reply,
    call,
    json_handler,
    new_key,
    refused_port,
    sdk_clients,
    settings_for,
    sse_handler,
    start_gateway,
    stored_usage,
)
from tests.waiting import until

OPENAI_KEY = "sk-upstream-openai-secret"
ANTHROPIC_KEY = "sk-ant-upstream-secret"

CHAT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
}
MESSAGE_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-3",
    "content": [{"type": "text", "text": "Hi!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3, "output_tokens": 9},
}


def chat_chunks(n: int, usage: bool = True) -> list[bytes]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    events = [
        b"data: "
        + msgspec.json.encode(
            {**base, "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}], "usage": None}
        )
        + b"\n\n"
        for i in range(n)
    ]
    if usage:
        events.append(
            b"data: "
            + msgspec.json.encode(
                {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
            )
            + b"\n\n"
        )
    events.append(b"data: [DONE]\n\n")
    return events


def message_events(n: int) -> list[bytes]:
    def ev(name: str, data: object) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"

    events = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-3",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    events += [
        ev(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"w{i} "}},
        )
        for i in range(n)
    ]
    events += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return events


def config(base_url: str, *, read_timeout: float = 600, down_url: str | None = None) -> str:
    down = down_url or base_url
    return f"""
[[providers]]
name = "down"
type = "openai"
base_url = "{down}"
api_key = "{OPENAI_KEY}"
models = ["down-*"]
connect_timeout = 2

[[providers]]
name = "oai"
type = "openai"
base_url = "{base_url}"
api_key = "{OPENAI_KEY}"
models = ["gpt-4o", "gpt-*", "text-embedding-*"]
read_timeout = {read_timeout}

[[providers]]
name = "ant"
type = "anthropic"
base_url = "{base_url}"
api_key_env = "TEST_ANTHROPIC_KEY"
models = ["claude-*"]
read_timeout = {read_timeout}

[[providers]]
name = "mock"
type = "mock"
"""


async def gateway_for(tmp_path: Path, upstream: FakeUpstream, **kw: object) -> Gateway:
    data = tmp_path / "data"
    settings = settings_for(data, config(upstream.base_url, **kw), TEST_ANTHROPIC_KEY=ANTHROPIC_KEY)  # type: ignore[arg-type]
    return await start_gateway(settings)


@pytest.fixture
async def gwu(tmp_path: Path, upstream: FakeUpstream):  # type: ignore[no-untyped-def]
    app = await gateway_for(tmp_path, upstream, down_url=f"http://127.0.0.1:{refused_port()}/v1", read_timeout=1.0)
    try:
        yield app
    finally:
        await app.shutdown()


async def test_forwards_original_bytes_with_provider_credentials(gwu: Gateway, upstream: FakeUpstream) -> None:
    upstream.routes["/v1/chat/completions"] = json_handler(CHAT_ANSWER)
    upstream.routes["/v1/messages"] = json_handler(MESSAGE_ANSWER)
    key, key_id = await new_key(gwu, requests=100, interval=60)
    body = b'{ "messages":[{"role":"user","content":"h\\u00e9 \xc3\xa9"}],\n "model" : "gpt-4o", "x":[1.50,1e3]}'
    reply = await call(
        gwu,
        "POST",
        "/v1/chat/completions",
        body=body,
        query=b"api-version=1",
        headers=[
            ("Authorization", f"Bearer {key}"),
            ("Content-Type", "application/json"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Cookie", "a=b"),
            ("OpenAI-Beta", "assistants=v2"),
            ("User-Agent", "test/1"),
            ("Accept-Encoding", "gzip"),
        ],
    )
    assert reply.status == 200, reply.body
    seen = upstream.seen[-1]
    assert seen.body == body and seen.path == "/v1/chat/completions" and seen.query == "api-version=1"
    h = seen.lower_headers
    assert h["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-api-key" not in h and key not in repr(seen.headers)
    for dropped in ("x-hop", "keep-alive", "te", "proxy-authorization", "cookie"):
        assert dropped not in h, dropped
    assert h["openai-beta"] == "assistants=v2" and h["user-agent"] == "test/1"
    assert h["content-type"] == "application/json"
    assert h.get("accept-encoding", "identity") == "identity"  # the gateway reads usage: no compression
    assert reply.json() == CHAT_ANSWER
    assert reply.headers["x-ratelimit-limit"] == "100" and reply.headers["x-request-id"].startswith("req_")

    # Anthropic: x-api-key replaced, anthropic-version / -beta through, request-id returned.
    reply = await call(
        gwu,
        "POST",
        "/v1/messages",
        body=b'{"model":"claude-3","max_tokens":5,"messages":[]}',
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"},
    )
    assert reply.status == 200
    h = upstream.seen[-1].lower_headers
    assert h["x-api-key"] == ANTHROPIC_KEY and "authorization" not in h
    assert (h["anthropic-version"], h["anthropic-beta"]) == ("2023-06-01", "tools-2024-04-04")
    assert reply.headers["request-id"] == reply.headers["x-request-id"]
    # Without anthropic-version the provider's default is sent.
    await call(
        gwu,
        "POST",
        "/v1/messages",
        body=b'{"model":"claude-3","max_tokens":5,"messages":[]}',
        headers={"x-api-key": key},
    )
    assert upstream.seen[-1].lower_headers["anthropic-version"] == "2023-06-01"

    totals = await stored_usage(gwu, key_id)
    assert (totals.requests, totals.successes) == (3, 3)
    assert totals.input_tokens == 11 + 2 * (20 + 2 + 3) and totals.output_tokens == 7 + 2 * 9
    assert totals.last_client_ip == "127.0.0.1"


async def test_upstream_response_headers(gwu: Gateway, upstream: FakeUpstream) -> None:
    upstream.routes["/v1/chat/completions"] = json_handler(
        CHAT_ANSWER,
        headers={"x-request-id": "up-1", "Set-Cookie": "s=1", "openai-processing-ms": "12", "x-ratelimit-limit": "999"},
    )
    key, _ = await new_key(gwu, requests=10, interval=60)
    reply = await call(
        gwu, "POST", "/v1/chat/completions", body=b'{"model":"gpt-4o"}', headers={"authorization": f"Bearer {key}"}
    )
    names = [n for n, _ in reply.raw_headers]
    assert reply.headers["openai-processing-ms"] == "12"
    assert reply.headers["x-upstream-request-id"] == "up-1" and reply.headers["x-request-id"].startswith("req_")
    assert b"set-cookie" not in names and names.count(b"x-ratelimit-limit") == 1
    assert reply.headers["x-ratelimit-limit"] == "10"
    assert int(reply.headers["content-length"]) == len(reply.body)


async def test_sse_relayed_chunk_by_chunk(gwu: Gateway, upstream: FakeUpstream) -> None:
    events = chat_chunks(5)
    stream = GatedStream(events)
    upstream.routes["/v1/chat/completions"] = stream.handler
    key, key_id = await new_key(gwu)
    reply = Reply()
    request = asyncio.ensure_future(
        call(
            gwu,
            "POST",
            "/v1/chat/completions",
            body=b'{"model":"gpt-4o","stream":true}',
            headers={"authorization": f"Bearer {key}"},
            reply=reply,
        )
    )

    def relayed(n: int) -> Callable[[], bool]:
        return lambda: reply.body == b"".join(events[:n])

    # Each event reaches the client when the upstream writes it, before the next one
    # is written: the upstream writes event n only once the client has n - 1.
    for n in range(1, len(events) + 1):
        stream.release()
        await until(relayed(n), f"event {n} at the client before the upstream writes event {n + 1}")
    await asyncio.wait_for(request, 10)
    assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream"
    assert "content-length" not in reply.headers
    assert reply.body == b"".join(events) and len(reply.chunks) >= len(events)
    totals = await stored_usage(gwu, key_id)
    assert (totals.input_tokens, totals.output_tokens) == (5, 5)


async def test_sdk_streams_and_usage_both_dialects(gwu: Gateway, upstream: FakeUpstream) -> None:
    upstream.routes["/v1/chat/completions"] = sse_handler(chat_chunks(4))
    upstream.routes["/v1/messages"] = sse_handler(message_events(6))
    key, key_id = await new_key(gwu)
    o, a = sdk_clients(gwu, key)
    parts = [
        c.choices[0].delta.content
        async for c in await o.chat.completions.create(model="gpt-4o", messages=[], stream=True)
        if c.choices
    ]
    assert "".join(p or "" for p in parts) == "w0 w1 w2 w3 "
    async with a.messages.stream(model="claude-3", max_tokens=10, messages=[]) as s:
        text = "".join([t async for t in s.text_stream])
    assert text == "w0 w1 w2 w3 w4 w5 "
    totals = await stored_usage(gwu, key_id)
    assert (totals.input_tokens, totals.output_tokens) == (5 + 25, 4 + 6)


@pytest.mark.parametrize("status", [400, 404, 422, 429, 500, 503])
async def test_upstream_error_status_relayed_with_body(gwu: Gateway, upstream: FakeUpstream, status: int) -> None:
    o_body = b'{"error": {"message": "upstream says no", "type": "x", "param": null, "code": "up"}}'
    a_body = b'{"type": "error", "error": {"type": "x", "message": "claude says no"}}'
    upstream.routes["/v1/chat/completions"] = json_handler(o_body, status=status)
    upstream.routes["/v1/messages"] = json_handler(a_body, status=status)
    key, key_id = await new_key(gwu, requests=50, interval=60)
    o, a = sdk_clients(gwu, key)
    with pytest.raises(openai.APIStatusError) as oe:
        await o.chat.completions.create(model="gpt-4o", messages=[])
    with pytest.raises(anthropic.APIStatusError) as ae:
        await a.messages.create(model="claude-3", max_tokens=5, messages=[])
    assert oe.value.status_code == ae.value.status_code == status
    assert oe.value.response.content == o_body and ae.value.response.content == a_body
    assert oe.value.response.headers["x-ratelimit-limit"] == "50"
    totals = await stored_usage(gwu, key_id)
    field = "failures_4xx" if status < 500 else "failures_5xx"
    assert (totals.requests, getattr(totals, field)) == (2, 2)


async def test_connect_refused_is_502(gwu: Gateway) -> None:
    key, key_id = await new_key(gwu, requests=10, interval=60)
    o, _ = sdk_clients(gwu, key)
    with pytest.raises(openai.InternalServerError) as oe:
        await o.chat.completions.create(model="down-gpt", messages=[])
    assert oe.value.status_code == 502
    err = oe.value.response.json()["error"]
    assert err["code"] == "upstream_unavailable" and "down" in err["message"]
    assert OPENAI_KEY not in oe.value.response.text
    assert oe.value.response.headers["x-ratelimit-remaining"] == "9"
    assert (await stored_usage(gwu, key_id)).failures_5xx == 1


async def test_read_timeout_is_504_and_closes_upstream(gwu: Gateway, upstream: FakeUpstream) -> None:
    upstream.routes["/v1/chat/completions"] = json_handler(CHAT_ANSWER, delay=5)
    upstream.routes["/v1/messages"] = json_handler(MESSAGE_ANSWER, delay=5)
    key, key_id = await new_key(gwu)
    o, a = sdk_clients(gwu, key)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as oe:
        await o.chat.completions.create(model="gpt-4o", messages=[])
    assert 0.9 < time.monotonic() - started < 3
    assert oe.value.status_code == 504 and oe.value.response.json()["error"]["code"] == "upstream_timeout"
    with pytest.raises(anthropic.InternalServerError) as ae:
        await a.messages.create(model="claude-3", max_tokens=5, messages=[])
    assert ae.value.status_code == 504 and ae.value.response.json()["error"]["type"] == "timeout_error"
    await until(lambda: all(s.cancelled for s in upstream.seen), "the upstream requests cancelled")
    assert all(s.cancelled and not s.finished for s in upstream.seen)  # the gateway hung up
    assert (await stored_usage(gwu, key_id)).failures_5xx == 2


async def test_client_disconnect_cancels_upstream(gwu: Gateway, upstream: FakeUpstream) -> None:
    upstream.routes["/v1/chat/completions"] = sse_handler(chat_chunks(50), gap=0.1)
    upstream.routes["/v1/messages"] = json_handler(MESSAGE_ANSWER, delay=10)
    key, key_id = await new_key(gwu)
    left = asyncio.Event()
    reply = Reply()
    request = asyncio.ensure_future(
        call(
            gwu,
            "POST",
            "/v1/chat/completions",
            body=b'{"model":"gpt-4o"}',
            headers={"authorization": f"Bearer {key}"},
            disconnect=left,
            reply=reply,
        )
    )
    await until(lambda: len(reply.chunks) >= 3, "three chunks at the client")
    left.set()
    await asyncio.wait_for(request, 10)
    seen = upstream.seen[-1]
    await until(lambda: seen.cancelled, "the upstream request cancelled")
    assert seen.cancelled and not seen.finished

    # Before the answer started (a long non-streamed request) too.
    left2 = asyncio.Event()
    request = asyncio.ensure_future(
        call(gwu, "POST", "/v1/messages", body=b'{"model":"claude-3"}', headers={"x-api-key": key}, disconnect=left2)
    )
    await until(lambda: len(upstream.seen) >= 2, "the second request at the upstream")
    left2.set()
    answer = await asyncio.wait_for(request, 10)
    assert answer.status == 0  # nothing was sent to a client that left
    await until(lambda: upstream.seen[-1].cancelled, "the upstream request cancelled")
    assert upstream.seen[-1].cancelled
    totals = await stored_usage(gwu, key_id)
    assert (totals.requests, totals.successes, totals.failures_4xx) == (2, 1, 1)  # 200 started; 499 before
