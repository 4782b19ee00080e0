"""Every API route through the real gateway, with the official SDKs as clients.

Each test also checks what reached the fake upstream: the body byte for byte, the
provider's credentials instead of the caller's ``sk-ar-`` key, and the rate-limit
headers on the answer.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_OPENAI_KEY,
    Gateway,
    assert_ratelimit_headers,
)
from tests.upstream_fake import TEXT, FakeUpstream, Recorded

MESSAGES = [{"role": "user", "content": "Hello!"}]

# The /v1 edge and its usage records on both stores (tests/conftest.py: store_backend).
pytestmark = pytest.mark.store_backends()


def only(records: list[Recorded], path: str) -> Recorded:
    hits = [r for r in records if r.path == path]
    assert len(hits) == 1, [(r.method, r.path) for r in records]
    return hits[0]


def assert_caller_key_absent(rec: Recorded, key: str) -> None:
    for name, value in rec.headers:
        assert key not in value, f"the caller's key reached upstream in {name}"
        assert key[6:] not in value
    assert key.encode() not in rec.body


def assert_openai_upstream(rec: Recorded, key: str) -> None:
    assert rec.header("authorization") == f"Bearer {UPSTREAM_OPENAI_KEY}"
    assert rec.header_values("authorization") == [f"Bearer {UPSTREAM_OPENAI_KEY}"]
    assert_caller_key_absent(rec, key)


def assert_anthropic_upstream(rec: Recorded, key: str) -> None:
    assert rec.header_values("x-api-key") == [UPSTREAM_ANTHROPIC_KEY]
    assert rec.header("authorization") is None
    assert_caller_key_absent(rec, key)


def hook_log() -> tuple[list[Any], dict[str, list[Any]]]:
    """An httpx2 event-hook pair that keeps every response the SDK received."""
    seen: list[Any] = []
    return seen, {"response": [seen.append]}


def sdk_http_client(hooks: dict[str, list[Any]]) -> Any:
    import httpx2  # the HTTP library these SDK versions are built on

    return httpx2.Client(event_hooks=hooks, timeout=30.0)


# ------------------------------------------------------------------- OpenAI


def test_chat_completion(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    seen, hooks = hook_log()
    client = clients("openai", key["key"], http_client=sdk_http_client(hooks))
    mark = fake.mark()
    resp = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    completion = resp.parse()
    assert completion.choices[0].message.content == TEXT
    rec = only(fake.since(mark), "/v1/chat/completions")
    assert completion.usage.prompt_tokens == rec.usage[0]
    assert completion.usage.completion_tokens == rec.usage[1]
    assert_openai_upstream(rec, key["key"])
    # The SDK's own request body reached the upstream unchanged.
    assert rec.body == seen[0].request.content
    assert_ratelimit_headers(resp.headers, limit=100000)
    assert resp.headers.get("x-request-id"), dict(resp.headers)


def ran_to_end(fake: FakeUpstream, rec: Recorded) -> bool:
    """The upstream stream was sent whole. The fake marks it finished after its last
    write returns, which can be after the client has read that write: wait (bounded)."""
    return fake.wait_for(lambda: rec.finished)


def test_chat_completion_streaming(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("openai", key["key"])
    mark = fake.mark()
    text, usage = [], None
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert_ratelimit_headers(resp.headers, limit=100000)
        for chunk in resp.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
    assert "".join(text) == TEXT
    rec = only(fake.since(mark), "/v1/chat/completions")
    assert rec.stream and ran_to_end(fake, rec)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == rec.usage
    assert_openai_upstream(rec, key["key"])


def test_stream_is_relayed_chunk_by_chunk(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any]) -> None:
    """The first event arrives while the upstream is still streaming: nothing is buffered whole."""
    fake.on("gpt-chunked", chunk_delay=0.2, chunks=4)
    body = {"model": "gpt-chunked", "stream": True, "messages": MESSAGES}
    with (
        httpx.Client(timeout=30.0) as client,
        client.stream(
            "POST", gateway.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key['key']}"}
        ) as resp,
    ):
        assert resp.status_code == 200
        chunks = resp.iter_raw()
        first = next(chunks)
        assert first.startswith(b"data: ")
        rec = fake.for_model("gpt-chunked")[-1]
        assert not rec.finished, "the gateway waited for the whole stream before relaying"
        rest = b"".join(chunks)
    assert rest.rstrip().endswith(b"data: [DONE]")


def test_completions(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("openai", key["key"])
    mark = fake.mark()
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    assert completion.choices[0].text == TEXT
    assert_openai_upstream(only(fake.since(mark), "/v1/completions"), key["key"])


def test_embeddings(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("openai", key["key"])
    mark = fake.mark()
    result = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(result.data) == 2
    assert result.data[1].embedding[0] == pytest.approx(0.25)
    rec = only(fake.since(mark), "/v1/embeddings")
    assert result.usage.prompt_tokens == rec.usage[0]
    assert_openai_upstream(rec, key["key"])


def test_models_list(gateway: Gateway, key: dict[str, Any], clients: Any) -> None:
    client = clients("openai", key["key"])
    models = list(client.models.list())
    ids = {m.id for m in models}
    assert "gpt-4o" in ids
    assert all(m.object == "model" for m in models)
    with httpx.Client(timeout=10.0) as http:
        raw = http.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
    assert raw.status_code == 200
    assert raw.json()["object"] == "list"
    assert_ratelimit_headers(raw.headers, limit=100000)


def test_responses(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("openai", key["key"])
    mark = fake.mark()
    response = client.responses.create(model="gpt-4o", input="Hello!")
    assert response.output_text == TEXT
    rec = only(fake.since(mark), "/v1/responses")
    assert (response.usage.input_tokens, response.usage.output_tokens) == rec.usage
    assert_openai_upstream(rec, key["key"])


def test_responses_streaming(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("openai", key["key"])
    mark = fake.mark()
    deltas = []
    with client.responses.stream(model="gpt-4o", input="Hello!") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT
    rec = only(fake.since(mark), "/v1/responses")
    assert rec.stream and ran_to_end(fake, rec)
    assert (final.usage.input_tokens, final.usage.output_tokens) == rec.usage


# ---------------------------------------------------------------- Anthropic


@pytest.mark.parametrize("kind", ["anthropic", "anthropic-x-api-key"])
def test_messages(fake: FakeUpstream, key: dict[str, Any], clients: Any, kind: str) -> None:
    seen, hooks = hook_log()
    client = clients(kind, key["key"], http_client=sdk_http_client(hooks))
    mark = fake.mark()
    resp = client.messages.with_raw_response.create(
        model="claude-3-5-sonnet-20241022", max_tokens=1024, messages=MESSAGES
    )
    message = resp.parse()
    assert message.content[0].text == TEXT
    rec = only(fake.since(mark), "/v1/messages")
    assert (message.usage.input_tokens, message.usage.output_tokens) == rec.usage
    assert_anthropic_upstream(rec, key["key"])
    assert rec.body == seen[0].request.content
    # The SDK's anthropic-version header passes through.
    assert rec.header("anthropic-version") == seen[0].request.headers["anthropic-version"]
    assert_ratelimit_headers(resp.headers, limit=100000)
    assert resp.headers.get("request-id"), dict(resp.headers)


def test_messages_streaming(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("anthropic", key["key"])
    mark = fake.mark()
    with client.messages.stream(model="claude-3-5-sonnet-20241022", max_tokens=1024, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    rec = only(fake.since(mark), "/v1/messages")
    assert rec.stream and ran_to_end(fake, rec)
    assert (final.usage.input_tokens, final.usage.output_tokens) == rec.usage
    assert_anthropic_upstream(rec, key["key"])


def test_count_tokens(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("anthropic", key["key"])
    fake.on("claude-count-7", usage=(7, 0))
    mark = fake.mark()
    result = client.messages.count_tokens(model="claude-count-7", messages=MESSAGES)
    assert result.input_tokens == 7
    assert_anthropic_upstream(only(fake.since(mark), "/v1/messages/count_tokens"), key["key"])


def test_anthropic_beta_passes_through(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    client = clients("anthropic", key["key"])
    mark = fake.mark()
    client.beta.messages.create(
        model="claude-3-5-sonnet-20241022", max_tokens=16, messages=MESSAGES, betas=["token-counting-2024-11-01"]
    )
    rec = only(fake.since(mark), "/v1/messages")
    assert rec.header("anthropic-beta") == "token-counting-2024-11-01"


# ----------------------------------------------------- the wire, by hand


def test_body_forwarded_byte_for_byte(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any]) -> None:
    """Odd spacing, key order, escapes and unknown fields arrive exactly as sent."""
    bodies = {
        "/v1/chat/completions": (
            b'{ "messages" :[{"role":"user","content":"h\\u00e9llo \xc3\xa9"}],\n\t"model": "gpt-4o" ,'
            b' "x_extra": [1, 2.50, 1e3, {"z": null}], "temperature":0.70 }'
        ),
        "/v1/messages": (
            b'{"max_tokens":8,"model":"claude-3-5-sonnet-20241022",   "messages":[{"role":"user",'
            b'"content":"\\"quoted\\""}],"metadata":{"user_id":"u-1"}}\n'
        ),
    }
    for path, body in bodies.items():
        mark = fake.mark()
        with httpx.Client(timeout=30.0) as client:
            resp = client.post(
                gateway.url + path,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "x-api-key": key["key"],
                    "anthropic-version": "2023-06-01",
                },
            )
        assert resp.status_code == 200, resp.text
        rec = only(fake.since(mark), path)
        assert rec.body == body
        assert_caller_key_absent(rec, key["key"])


def test_hop_by_hop_headers_not_forwarded(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any]) -> None:
    mark = fake.mark()
    with httpx.Client(timeout=30.0) as client:
        resp = client.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES},
            headers={
                "Authorization": f"Bearer {key['key']}",
                "Connection": "keep-alive, X-Drop-Me",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic c2VjcmV0OnNlY3JldA==",
                "X-Drop-Me": "hop",
            },
        )
    assert resp.status_code == 200, resp.text
    rec = only(fake.since(mark), "/v1/chat/completions")
    for name in ("te", "keep-alive", "proxy-authorization", "x-drop-me"):
        assert rec.header(name) is None, f"{name} was forwarded: {rec.headers}"


@pytest.mark.parametrize("header", ["bearer", "Bearer", "BEARER", "x-api-key"])
def test_both_auth_headers_by_hand(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], header: str) -> None:
    """Bearer (scheme in any case) and x-api-key, on both dialects' routes."""
    headers = {"x-api-key": key["key"]} if header == "x-api-key" else {"Authorization": f"{header} {key['key']}"}
    with httpx.Client(timeout=30.0) as client:
        chat = client.post(
            gateway.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}, headers=headers
        )
        msg = client.post(
            gateway.url + "/v1/messages",
            json={"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": MESSAGES},
            headers={**headers, "anthropic-version": "2023-06-01"},
        )
    assert chat.status_code == 200, chat.text
    assert msg.status_code == 200, msg.text
    assert chat.json()["choices"][0]["message"]["content"] == TEXT
    assert msg.json()["content"][0]["text"] == TEXT
    assert_ratelimit_headers(chat.headers, limit=100000)
    assert_ratelimit_headers(msg.headers, limit=100000)


def test_what_each_sdk_sends_is_accepted(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    """Bearer from the OpenAI SDK, Bearer from the Anthropic SDK 2.x, x-api-key from the
    Anthropic SDK configured with it (checked on the wire, not assumed)."""
    sent = {}
    for kind in ("openai", "anthropic", "anthropic-x-api-key"):
        seen, hooks = hook_log()
        client = clients(kind, key["key"], http_client=sdk_http_client(hooks))
        if kind == "openai":
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        else:
            client.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=8, messages=MESSAGES)
        assert [r.status_code for r in seen] == [200]
        sent[kind] = seen[0].request.headers
    assert sent["openai"]["authorization"] == f"Bearer {key['key']}"
    assert "x-api-key" not in sent["openai"]
    assert sent["anthropic"]["authorization"] == f"Bearer {key['key']}"
    assert sent["anthropic-x-api-key"]["x-api-key"] == key["key"]
    assert "authorization" not in sent["anthropic-x-api-key"]


def test_upstream_connections_are_pooled(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any]) -> None:
    """Sequential requests reuse keep-alive upstream connections (one pool per provider per worker)."""
    mark = fake.mark()
    with httpx.Client(timeout=30.0) as client:
        for _ in range(12):
            resp = client.post(
                gateway.url + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key['key']}"},
            )
            assert resp.status_code == 200
    peers = {r.peer for r in fake.since(mark) if r.path == "/v1/chat/completions"}
    assert 1 <= len(peers) <= gateway.workers, peers


def test_request_id_returned(gateway: Gateway, key: dict[str, Any]) -> None:
    with httpx.Client(timeout=30.0) as client:
        ids = set()
        for _ in range(3):
            resp = client.post(
                gateway.url + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key['key']}"},
            )
            assert resp.status_code == 200
            ids.add(resp.headers.get("x-request-id"))
    assert None not in ids and len(ids) == 3, ids


def test_wrong_dialect_model_is_400(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    """A Claude model on the OpenAI route (and a GPT model on /v1/messages): a clear 400, nothing forwarded."""
    import anthropic
    import openai

    mark = fake.mark()
    with pytest.raises(openai.BadRequestError) as o_exc:
        clients("openai", key["key"]).chat.completions.create(model="claude-3-5-sonnet-20241022", messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError) as a_exc:
        clients("anthropic", key["key"]).messages.create(model="gpt-4o", max_tokens=8, messages=MESSAGES)
    assert fake.since(mark) == []
    assert json.loads(o_exc.value.response.text)["error"]["message"]
    assert a_exc.value.response.json()["error"]["type"] == "invalid_request_error"
