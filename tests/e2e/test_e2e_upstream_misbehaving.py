"""Misbehaving upstreams through the real server (``agentrouter serve --workers 2``,
Granian) and the real SDKs: each is a clear error in the caller's dialect, never a
500, a redirect followed, or a stream that looks complete; and what goes upstream
(the gateway's request id, no caller-chosen organization) and what is counted.

The upstream is the fake's raw listener (``FakeUpstream.raw``), which writes exact
bytes: the provider ``raw-openai`` serves ``raw-gpt*``, ``raw-anthropic``
``raw-claude*``, with a 1 s read timeout."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import SLOW_TIMEOUT, Gateway, anthropic_error, openai_error
from tests.upstream_fake import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]
CHAT = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "raw-gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
).encode()


def answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def sse_head(*headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def both_502(clients: Any, key: str, model: str) -> tuple[openai.APIStatusError, anthropic.APIStatusError]:
    with pytest.raises(openai.InternalServerError) as oe:
        clients("openai", key).chat.completions.create(model=f"raw-gpt-{model}", messages=MESSAGES)
    with pytest.raises(anthropic.InternalServerError) as ae:
        clients("anthropic", key).messages.create(model=f"raw-claude-{model}", max_tokens=8, messages=MESSAGES)
    assert oe.value.status_code == ae.value.status_code == 502
    return oe.value, ae.value


INVALID = {
    "cr-in-value": answer(CHAT, b"X-Trace: a\rb"),
    "nul-in-value": answer(CHAT, b"X-Trace: a\x00b"),
    "space-in-name": answer(CHAT, b"X Trace: 1"),
    "obs-fold": answer(CHAT, b"X-Trace: 1", b"\tfolded"),
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "head-over-64k": answer(b"{}", b"X-Big: " + b"a" * 70_000),
    "plus-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
    "gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_answer_is_502_in_the_dialect(
    gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any, name: str
) -> None:
    fake.raw(f"raw-gpt-{name}", INVALID[name])
    fake.raw(f"raw-claude-{name}", INVALID[name])
    o, a = both_502(clients, key["key"], name)
    err = openai_error(o.response, code="upstream_invalid_response")
    assert "raw-openai" in err["message"]
    assert anthropic_error(a.response, type_="api_error")
    assert "raw-openai" in gateway.log_tail(400) and "invalid answer from the upstream" in gateway.log_tail(400)


def test_redirect_is_never_relayed_nor_followed(
    gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any
) -> None:
    """The SDKs follow redirects: relayed, a 307 would re-post the prompt (and the
    caller's key) to wherever it points. Here it points at the fake's other port."""
    for dialect in ("gpt", "claude"):
        target = f"{fake.base_url}/v1/{'chat/completions' if dialect == 'gpt' else 'messages'}"
        fake.raw(f"raw-{dialect}-moved", answer(b"{}", b"Location: " + target.encode(), status=b"307 Temporary"))
    o, a = both_502(clients, key["key"], "moved")
    err = openai_error(o.response, code="upstream_redirect")
    assert "redirect" in err["message"] and "location" not in o.response.headers
    anthropic_error(a.response, type_="api_error")
    for model in ("raw-gpt-moved", "raw-claude-moved"):
        assert [r.raw for r in fake.for_model(model)] == [True]  # the redirect's target never saw the prompt
    assert "answered 307 with a redirect" in gateway.log_tail(400)


@pytest.mark.parametrize("body", [b"<html><body>Bad gateway</body></html>", b'{"id": "c1", "choices": ['])
def test_200_whose_body_is_not_json_is_502(fake: FakeUpstream, key: dict[str, Any], clients: Any, body: bytes) -> None:
    fake.raw("raw-gpt-junk", answer(body))
    fake.raw("raw-claude-junk", answer(body))
    o, a = both_502(clients, key["key"], "junk")
    assert "not a JSON object" in openai_error(o.response, code="upstream_invalid_response")["message"]
    anthropic_error(a.response, type_="api_error")


def test_retry_after_ms_reaches_the_sdk(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    busy = answer(
        b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}',
        b"Retry-After: 1",
        b"retry-after-ms: 40",
        status=b"429 Too Many Requests",
    )
    fake.raw("raw-gpt-busy", busy, close=False)
    with pytest.raises(openai.RateLimitError) as oe:
        clients("openai", key["key"]).chat.completions.create(model="raw-gpt-busy", messages=MESSAGES)
    assert (oe.value.response.headers["retry-after"], oe.value.response.headers["retry-after-ms"]) == ("1", "40")
    # The SDK's own retry waits what retry-after-ms says (40 ms) and tries again.
    mark = fake.mark()
    with pytest.raises(openai.RateLimitError):
        clients("openai", key["key"], max_retries=1).chat.completions.create(model="raw-gpt-busy", messages=MESSAGES)
    assert len(fake.since(mark)) == 2


def test_absurd_usage_never_drives_totals_negative(
    gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any
) -> None:
    odd = json.loads(CHAT)
    odd["usage"] = {"prompt_tokens": -1000, "completion_tokens": 10**15, "total_tokens": 0}
    fake.raw("raw-gpt-odd", answer(json.dumps(odd).encode()), close=False)
    client = clients("openai", key["key"])
    for _ in range(3):
        assert client.chat.completions.create(model="raw-gpt-odd", messages=MESSAGES).choices[0].message.content
    usage = gateway.wait_usage(key["id"], 3)
    assert (usage["requests"], usage["input_tokens"], usage["output_tokens"]) == (3, 0, 0)
    assert gateway.log_tail(400).count("provider raw-openai: a usage number that is not a token count") <= 2


OPENAI_EVENTS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"raw-gpt","choices":[{"index":0,'
    b'"delta":{"content":"w%d "},"finish_reason":null}]}\n\n' % i
    for i in range(2)
]
ANTHROPIC_EVENTS = [
    b"event: message_start\ndata: "
    + json.dumps(
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "raw-claude",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 4, "output_tokens": 1},
            },
        }
    ).encode()
    + b"\n\n",
    (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
        b'"text":""}}\n\n'
    ),
    (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        b'"text":"w0 "}}\n\n'
    ),
]


@pytest.mark.parametrize("how", ["cut", "stalled", "close-delimited"])
def test_stream_cut_or_stalled_raises_in_both_sdks_and_counts_as_failure(
    gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any, how: str
) -> None:
    for dialect, events in (("gpt", OPENAI_EVENTS), ("claude", ANTHROPIC_EVENTS)):
        if how == "close-delimited":
            fake.raw(f"raw-{dialect}-{how}", sse_head(b"Connection: close"), *events)
        else:
            pause = (SLOW_TIMEOUT + 2.0,) if how == "stalled" else ()
            fake.raw(f"raw-{dialect}-{how}", sse_head(b"Transfer-Encoding: chunked"), *map(chunk, events), *pause)
    got = []
    with pytest.raises(openai.APIError, match="raw-openai") as oe:
        for c in clients("openai", key["key"]).chat.completions.create(
            model=f"raw-gpt-{how}", messages=MESSAGES, stream=True
        ):
            got.append(c.choices[0].delta.content)
    assert got == ["w0 ", "w1 "]
    assert isinstance(oe.value.body, dict) and oe.value.body["code"] == (
        "upstream_timeout" if how == "stalled" else "upstream_unavailable"
    )
    text = []
    stream = clients("anthropic", key["key"]).messages.stream(
        model=f"raw-claude-{how}", max_tokens=8, messages=MESSAGES
    )
    with pytest.raises(anthropic.APIStatusError, match="raw-anthropic") as ae, stream as s:
        text.extend(s.text_stream)
    assert text == ["w0 "]
    assert ae.value.body["error"]["type"] == ("timeout_error" if how == "stalled" else "api_error")  # type: ignore[index]
    usage = gateway.wait_usage(key["id"], 2)
    assert (usage["requests"], usage["successes"], usage["failures_5xx"]) == (2, 0, 2)


def test_request_received_then_dropped_is_never_sent_twice(
    gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any
) -> None:
    """The upstream read the request and closed without answering: it may be billing
    it, so the gateway answers 502 and never sends it again, also on a reused
    keep-alive connection (each worker has some after these first requests)."""
    fake.raw("raw-gpt-ok", answer(CHAT), close=False)
    client = clients("openai", key["key"])
    for _ in range(8):
        client.chat.completions.create(model="raw-gpt-ok", messages=MESSAGES)
    fake.raw("raw-gpt-dropped", close=True)  # read the request, write nothing, close
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as oe:
            client.chat.completions.create(model="raw-gpt-dropped", messages=MESSAGES)
        assert oe.value.status_code == 502
        openai_error(oe.value.response, code="upstream_unavailable")
    assert len(fake.for_model("raw-gpt-dropped")) == 3  # each exactly once


def test_request_ids_and_organization(gateway: Gateway, fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    """The gateway's x-request-id goes upstream (the caller's is kept in the request
    log); a caller's OpenAI-Organization / -Project never reach the upstream."""
    client = clients("openai", key["key"], organization="org-attacker", project="proj_attacker")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-request-id": "caller-e2e-1"}
    )
    rid = raw.headers["x-request-id"]
    seen = fake.for_model("gpt-4o")[-1]
    assert seen.header_values("x-request-id") == [rid] and rid.startswith("req_")
    assert seen.header("openai-organization") is None and seen.header("openai-project") is None
    gateway.wait_usage(key["id"], 1)
    with sqlite3.connect(gateway.data_dir / "agentrouter.db") as db:
        rows = list(db.execute("SELECT caller_request_id FROM request_log WHERE key_id = ?", (key["id"],)))
    assert rows == [("caller-e2e-1",)]


def test_raw_listener_is_a_real_http_peer(fake: FakeUpstream) -> None:
    """The raw listener answers whatever bytes it was given, to any HTTP client."""
    fake.raw("raw-probe", answer(b'{"ok": true}'))
    reply = httpx.post(fake.raw_base_url + "/v1/chat/completions", json={"model": "raw-probe"}, timeout=5)
    assert reply.json() == {"ok": True}
