"""Upstream failures as the SDKs see them: down → 502, slow → 504, error statuses
relayed with their body; and a client that leaves mid-stream cancels the upstream."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import SLOW_TIMEOUT, Gateway, anthropic_error, assert_ratelimit_headers, openai_error
from tests.upstream_fake import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]


def test_upstream_down_is_502(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    with pytest.raises(openai.InternalServerError) as o_exc:
        clients("openai", key["key"]).chat.completions.create(model="down-gpt-4o", messages=MESSAGES)
    assert o_exc.value.status_code == 502
    openai_error(o_exc.value.response)
    assert_ratelimit_headers(o_exc.value.response.headers, limit=100000)
    with pytest.raises(anthropic.APIStatusError) as a_exc:
        clients("anthropic", key["key"]).messages.create(model="down-claude-3", max_tokens=8, messages=MESSAGES)
    assert isinstance(a_exc.value, anthropic.InternalServerError)
    assert a_exc.value.status_code == 502
    anthropic_error(a_exc.value.response, type_="api_error")


@pytest.mark.slow
def test_upstream_slow_is_504(fake: FakeUpstream, key: dict[str, Any], clients: Any) -> None:
    fake.on("slow-gpt-4o", delay=SLOW_TIMEOUT + 4)
    fake.on("slow-claude-3", delay=SLOW_TIMEOUT + 4)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as o_exc:
        clients("openai", key["key"]).chat.completions.create(model="slow-gpt-4o", messages=MESSAGES)
    took = time.monotonic() - started
    assert o_exc.value.status_code == 504
    openai_error(o_exc.value.response)
    assert SLOW_TIMEOUT * 0.9 <= took < SLOW_TIMEOUT + 3, took
    with pytest.raises(anthropic.InternalServerError) as a_exc:
        clients("anthropic", key["key"]).messages.create(model="slow-claude-3", max_tokens=8, messages=MESSAGES)
    assert a_exc.value.status_code == 504
    assert anthropic_error(a_exc.value.response)["type"] in ("api_error", "timeout_error")
    # The gateway gave up on the upstream request: its connection was closed.
    for model in ("slow-gpt-4o", "slow-claude-3"):
        rec = fake.for_model(model)[-1]
        assert fake.wait_for(lambda rec=rec: rec.closed_early, 5), model
        assert not rec.finished


@pytest.mark.parametrize(
    ("status", "o_error", "a_error"),
    [
        (500, openai.InternalServerError, anthropic.InternalServerError),
        (503, openai.InternalServerError, anthropic.InternalServerError),
        (400, openai.BadRequestError, anthropic.BadRequestError),
        (404, openai.NotFoundError, anthropic.NotFoundError),
        (422, openai.UnprocessableEntityError, anthropic.UnprocessableEntityError),
    ],
)
def test_upstream_error_status_relayed_with_body(
    fake: FakeUpstream, key: dict[str, Any], clients: Any, status: int, o_error: type, a_error: type
) -> None:
    o_error_body = {
        "message": f"upstream says {status}",
        "type": "upstream_error",
        "param": None,
        "code": f"fake_{status}",
    }
    o_body = json.dumps({"error": o_error_body}).encode()
    a_error_body = {"type": "upstream_error", "message": f"claude upstream says {status}"}
    a_body = json.dumps({"type": "error", "error": a_error_body}).encode()
    fake.on(f"gpt-fail-{status}", status=status, body=o_body)
    fake.on(f"claude-fail-{status}", status=status, body=a_body)
    with pytest.raises(o_error) as o_exc:
        clients("openai", key["key"]).chat.completions.create(model=f"gpt-fail-{status}", messages=MESSAGES)
    assert o_exc.value.status_code == status
    assert o_exc.value.response.content == o_body
    assert f"upstream says {status}" in str(o_exc.value)
    assert_ratelimit_headers(o_exc.value.response.headers, limit=100000)
    with pytest.raises(a_error) as a_exc:
        clients("anthropic", key["key"]).messages.create(model=f"claude-fail-{status}", max_tokens=8, messages=MESSAGES)
    assert a_exc.value.status_code == status
    assert a_exc.value.response.content == a_body
    assert f"claude upstream says {status}" in str(a_exc.value)


def _wait_closed(fake: FakeUpstream, model: str) -> None:
    rec = fake.for_model(model)[-1]
    assert fake.wait_for(lambda: rec.closed_early or rec.finished, 8), "the upstream stream neither ended nor closed"
    assert rec.closed_early, "the upstream stream ran to its end after the client left"
    assert not rec.finished
    assert rec.events_sent < 40


@pytest.mark.slow
def test_client_disconnect_mid_stream_cancels_upstream_openai(
    fake: FakeUpstream, key: dict[str, Any], clients: Any
) -> None:
    fake.on("gpt-slow-stream", chunk_delay=0.1, chunks=40)
    client = clients("openai", key["key"])
    with client.chat.completions.create(model="gpt-slow-stream", messages=MESSAGES, stream=True) as stream:
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
    _wait_closed(fake, "gpt-slow-stream")


@pytest.mark.slow
def test_client_disconnect_mid_stream_cancels_upstream_anthropic(
    fake: FakeUpstream, key: dict[str, Any], clients: Any
) -> None:
    fake.on("claude-slow-stream", chunk_delay=0.1, chunks=40)
    client = clients("anthropic", key["key"])
    with client.messages.stream(model="claude-slow-stream", max_tokens=8, messages=MESSAGES) as stream:
        event = next(iter(stream))
        assert event.type == "message_start"
    _wait_closed(fake, "claude-slow-stream")


@pytest.mark.slow
def test_client_disconnect_raw_socket_cancels_upstream(
    gateway: Gateway, fake: FakeUpstream, key: dict[str, Any]
) -> None:
    """The same with a bare connection dropped after the first bytes (no SDK in between)."""
    fake.on("gpt-slow-stream-raw", chunk_delay=0.1, chunks=40)
    with (
        httpx.Client(timeout=30.0) as http,
        http.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json={"model": "gpt-slow-stream-raw", "stream": True, "messages": MESSAGES},
            headers={"Authorization": f"Bearer {key['key']}"},
        ) as resp,
    ):
        assert resp.status_code == 200
        assert next(resp.iter_raw())
    _wait_closed(fake, "gpt-slow-stream-raw")
