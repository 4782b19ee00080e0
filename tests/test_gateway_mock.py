"""The built-in mock provider, through the official SDKs: every endpoint in both
dialects parses, streams arrive as several events, usage is counted."""

from __future__ import annotations

import base64
import struct

import msgspec
import pytest

from agentrouter.gateway import mock
from agentrouter.gateway.app import Gateway
from agentrouter.gateway.errors import Dialect
from agentrouter.gateway.routing import RouteKind
from tests.gateway_fixtures import call, new_key, sdk_clients, stored_usage

MESSAGES = [{"role": "user", "content": "Hello there!"}]


async def test_chat_json_and_stream(gw: Gateway) -> None:
    key, key_id = await new_key(gw)
    o, _ = sdk_clients(gw, key)
    chat = await o.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    text = chat.choices[0].message.content
    assert text is not None and "Hello there!" in text and "mock" in text
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    # Deterministic: the same question, the same answer.
    again = await o.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert again.choices[0].message.content == text

    stream = await o.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    deltas, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(deltas) > 5 and "".join(deltas) == text
    assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens

    totals = await stored_usage(gw, key_id)
    assert totals.requests == 3 and totals.successes == 3
    assert totals.output_tokens == 3 * chat.usage.completion_tokens
    assert totals.input_tokens == 3 * chat.usage.prompt_tokens


async def test_max_tokens_cuts_the_answer(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    o, a = sdk_clients(gw, key)
    chat = await o.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
    assert chat.choices[0].finish_reason == "length" and chat.usage is not None
    assert chat.usage.completion_tokens <= 3
    msg = await a.messages.create(model="mock-claude", max_tokens=3, messages=MESSAGES)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens <= 3


async def test_completions(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    o, _ = sdk_clients(gw, key)
    done = await o.completions.create(model="mock-gpt", prompt="Say hi", max_tokens=100)
    assert "Say hi" in done.choices[0].text
    pieces = [
        c.choices[0].text
        async for c in await o.completions.create(model="mock-gpt", prompt="Say hi", max_tokens=100, stream=True)
        if c.choices
    ]
    assert "".join(pieces) == done.choices[0].text


@pytest.mark.parametrize("encoding", ["float", "base64", None])
async def test_embeddings(gw: Gateway, encoding: str | None) -> None:
    key, _ = await new_key(gw)
    o, _ = sdk_clients(gw, key)
    extra = {"encoding_format": encoding} if encoding else {}  # the SDK asks for base64 by default
    result = await o.embeddings.create(model="text-embedding-3-small", input=["a", "b"], **extra)
    vectors = [d.embedding for d in result.data]
    if encoding == "base64":  # asked for explicitly, the SDK hands the string over as it came
        vectors = [list(struct.unpack("<1536f", base64.b64decode(v))) for v in vectors]  # type: ignore[arg-type]
    assert [len(v) for v in vectors] == [1536, 1536]
    assert vectors[0] != vectors[1]
    norm = sum(v * v for v in vectors[0])
    assert abs(norm - 1.0) < 1e-3
    small = await o.embeddings.create(model="mock-embedding", input="a", dimensions=8)
    assert len(small.data[0].embedding) == 8


def test_embedding_base64_is_float32_little_endian() -> None:
    body = msgspec.json.encode({"model": "mock-embedding", "input": "x", "encoding_format": "base64", "dimensions": 4})
    result = mock.handle(RouteKind.EMBEDDINGS, Dialect.OPENAI, "mock-embedding", body, "req_1")
    encoded = msgspec.json.decode(result.chunks[0])["data"][0]["embedding"]
    floats = struct.unpack("<4f", base64.b64decode(encoded))
    as_float = msgspec.json.decode(
        mock.handle(
            RouteKind.EMBEDDINGS,
            Dialect.OPENAI,
            "mock-embedding",
            msgspec.json.encode({"model": "mock-embedding", "input": "x", "dimensions": 4}),
            "req_2",
        ).chunks[0]
    )
    assert floats == pytest.approx(as_float["data"][0]["embedding"], rel=1e-6)


async def test_responses_json_and_stream(gw: Gateway) -> None:
    key, key_id = await new_key(gw)
    o, _ = sdk_clients(gw, key)
    resp = await o.responses.create(model="gpt-4o", input="Tell me something")
    assert "Tell me something" in resp.output_text
    assert resp.usage is not None and resp.usage.output_tokens > 0
    events = [e async for e in await o.responses.create(model="gpt-4o", input="Tell me something", stream=True)]
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == resp.output_text
    totals = await stored_usage(gw, key_id)
    assert totals.output_tokens == 2 * resp.usage.output_tokens


async def test_messages_json_stream_and_count_tokens(gw: Gateway) -> None:
    key, key_id = await new_key(gw)
    _, a = sdk_clients(gw, key)
    msg = await a.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=1024, messages=MESSAGES)
    assert msg.content[0].type == "text" and "Hello there!" in msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    async with a.messages.stream(model="claude-3-5-sonnet-20241022", max_tokens=1024, messages=MESSAGES) as s:
        texts = [t async for t in s.text_stream]
        final = await s.get_final_message()
    assert len(texts) > 5 and "".join(texts) == msg.content[0].text
    assert final.usage.output_tokens == msg.usage.output_tokens
    counted = await a.messages.count_tokens(model="claude-3-5-sonnet-20241022", messages=MESSAGES)
    assert counted.input_tokens == msg.usage.input_tokens
    totals = await stored_usage(gw, key_id)
    assert (totals.requests, totals.successes) == (3, 3)
    assert totals.input_tokens == 2 * msg.usage.input_tokens  # count_tokens is not usage
    assert totals.output_tokens == 2 * msg.usage.output_tokens


async def test_stream_event_order_anthropic(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    body = msgspec.json.encode({"model": "mock-claude", "max_tokens": 50, "stream": True, "messages": MESSAGES})
    reply = await call(gw, "POST", "/v1/messages", headers={"x-api-key": key}, body=body)
    assert reply.headers["content-type"].startswith("text/event-stream")
    names = [line.split(b": ", 1)[1] for line in reply.body.split(b"\n") if line.startswith(b"event:")]
    assert names[:3] == [b"message_start", b"content_block_start", b"ping"]
    assert names[-3:] == [b"content_block_stop", b"message_delta", b"message_stop"]
    assert len(reply.chunks) == len(names)  # one event per send: a realistic stream


async def test_models_lists_the_mock_models(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    o, a = sdk_clients(gw, key)
    ids = [m.id async for m in o.models.list()]
    assert ids == list(mock.MODELS)
    assert (await o.models.retrieve("gpt-4o")).owned_by == "mock"
    # The Anthropic SDK gets its own list format.
    assert [m.id async for m in a.models.list()] == list(mock.MODELS)


async def test_mock_validates_in_dialect(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    reply = await call(
        gw, "POST", "/v1/messages", headers={"x-api-key": key}, body=b'{"model": "mock-claude", "messages": []}'
    )
    assert reply.status == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    reply = await call(
        gw, "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, body=b'{"model": "mock-gpt"}'
    )
    assert reply.status == 400 and reply.json()["error"]["param"] == "messages"
