"""Rate limits through the real gateway: 429 with its headers, the SDKs' retry
honouring Retry-After, X-RateLimit-* on every authenticated answer, and limits that
are exact across the two worker processes."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    Gateway,
    anthropic_error,
    assert_ratelimit_headers,
    async_client,
    openai_error,
)
from tests.upstream_fake import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]


def assert_429_headers(headers: Any, *, limit: int, interval: float) -> float:
    """The 429's headers; returns the wait the SDKs will use (retry-after-ms, in seconds)."""
    assert_ratelimit_headers(headers, limit=limit)
    assert int(headers["x-ratelimit-remaining"]) == 0
    retry_after = float(headers["retry-after"])
    retry_ms = float(headers["retry-after-ms"])
    assert 0 < retry_ms <= interval * 1000
    # Whole seconds, rounded up: a client that only reads Retry-After is never early.
    assert retry_after == math.ceil(retry_ms / 1000), (retry_after, retry_ms)
    reset = int(headers["x-ratelimit-reset"])
    assert time.time() - 1 <= reset <= time.time() + interval + 1
    return retry_ms / 1000


def timed_hooks() -> tuple[list[tuple[str, float, Any]], dict[str, list[Any]]]:
    log: list[tuple[str, float, Any]] = []
    return log, {
        "request": [lambda r: log.append(("request", time.monotonic(), r))],
        "response": [lambda r: log.append(("response", time.monotonic(), r))],
    }


def sdk_http(hooks: dict[str, list[Any]]) -> Any:
    import httpx2

    return httpx2.Client(event_hooks=hooks, timeout=30.0)


@pytest.mark.slow
def test_openai_429_then_sdk_retry_honours_retry_after(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    created = gateway.create_key(name="one-per-2s", limit=("1", "2"))
    client = clients("openai", created["key"])
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    mark = fake.mark()
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.since(mark) == [], "a refused request reached the upstream"
    resp = exc.value.response
    assert resp.status_code == 429
    assert_429_headers(resp.headers, limit=1, interval=2)
    err = openai_error(resp, code="rate_limit_exceeded")
    assert err["type"]

    log, hooks = timed_hooks()
    retrying = clients("openai", created["key"], max_retries=2, http_client=sdk_http(hooks))
    started = time.monotonic()
    completion = retrying.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert completion.choices[0].message.content
    statuses = [entry[2].status_code for entry in log if entry[0] == "response"]
    assert statuses == [429, 200], "the SDK's wait was not enough (or it did not retry)"
    first_429 = next(entry for entry in log if entry[0] == "response")
    wait = assert_429_headers(first_429[2].headers, limit=1, interval=2)
    retry_sent = [entry[1] for entry in log if entry[0] == "request"][1]
    assert retry_sent - first_429[1] >= wait
    assert elapsed >= wait


@pytest.mark.slow
def test_anthropic_429_then_sdk_retry_honours_retry_after(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    created = gateway.create_key(name="one-per-2s-anthropic", limit=("1", "2"))
    client = clients("anthropic", created["key"])
    kwargs = {"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": MESSAGES}
    client.messages.create(**kwargs)

    mark = fake.mark()
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(**kwargs)
    assert fake.since(mark) == []
    resp = exc.value.response
    assert_429_headers(resp.headers, limit=1, interval=2)
    anthropic_error(resp, type_="rate_limit_error")

    log, hooks = timed_hooks()
    retrying = clients("anthropic", created["key"], max_retries=2, http_client=sdk_http(hooks))
    started = time.monotonic()
    message = retrying.messages.create(**kwargs)
    elapsed = time.monotonic() - started
    assert message.content[0].text
    statuses = [entry[2].status_code for entry in log if entry[0] == "response"]
    assert statuses == [429, 200]
    first_429 = next(entry for entry in log if entry[0] == "response")
    wait = assert_429_headers(first_429[2].headers, limit=1, interval=2)
    retry_sent = [entry[1] for entry in log if entry[0] == "request"][1]
    assert retry_sent - first_429[1] >= wait
    assert elapsed >= wait


def test_ratelimit_headers_on_every_authenticated_response(gateway: Gateway, fake: FakeUpstream) -> None:
    """Success, stream, bad request, unknown model, upstream error and 429 all carry them."""
    created = gateway.create_key(name="headers", limit=("8", "3600"))
    fake.on("gpt-headers-500", status=500, body=b'{"error": {"message": "upstream broke", "type": "server_error"}}')
    auth = {"Authorization": f"Bearer {created['key']}"}
    remaining = []
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        answers = [
            http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}, headers=auth),
            http.post(
                "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES, "stream": True}, headers=auth
            ),
            http.post("/v1/chat/completions", content=b"{not json", headers=auth),
            http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": MESSAGES}, headers=auth),
            http.post("/v1/chat/completions", json={"model": "gpt-headers-500", "messages": MESSAGES}, headers=auth),
            http.post(
                "/v1/messages",
                json={"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": MESSAGES},
                headers={"x-api-key": created["key"]},
            ),
            http.get("/v1/models", headers=auth),
            http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=auth),
        ]
        assert [a.status_code for a in answers] == [200, 200, 400, 404, 500, 200, 200, 200]
        for answer in answers:
            assert_ratelimit_headers(answer.headers, limit=8)
            remaining.append(int(answer.headers["x-ratelimit-remaining"]))
        assert remaining == [7, 6, 5, 4, 3, 2, 1, 0]
        refused = http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}, headers=auth)
    assert refused.status_code == 429
    assert_429_headers(refused.headers, limit=8, interval=3600)


async def _fire(url: str, key: str, n: int) -> list[httpx.Response]:
    """``n`` requests at once, each on a connection of its own (so both workers take some)."""

    async def one(i: int) -> httpx.Response:
        async with async_client() as client:
            if i % 2:
                return await client.post(
                    url + "/v1/chat/completions",
                    json={"model": "gpt-4o", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {key}"},
                )
            return await client.post(
                url + "/v1/messages",
                json={"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": MESSAGES},
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            )

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.slow
async def test_limit_exact_across_workers(gateway: Gateway, fake: FakeUpstream) -> None:
    created = gateway.create_key(name="exact", limit=("20", "3600"))
    mark = fake.mark()
    answers = await _fire(gateway.url, created["key"], 40)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 20 + [429] * 20
    # Each admitted request saw a different "remaining": the workers share one bucket.
    remaining = sorted(int(a.headers["x-ratelimit-remaining"]) for a in answers if a.status_code == 200)
    assert remaining == list(range(20))
    assert len(fake.since(mark)) == 20
    usage = gateway.wait_usage(created["id"], 40)
    assert usage["requests"] == 40
    assert usage["successes"] == 20
    assert usage["failures_4xx"] == 20
