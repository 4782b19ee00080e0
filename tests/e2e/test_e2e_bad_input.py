"""Bad requests: a clear error in the caller's dialect, nothing forwarded upstream,
and the failure counted for the key when the key was valid."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import (
    MAX_BODY_BYTES,
    Gateway,
    anthropic_error,
    assert_ratelimit_headers,
    openai_error,
)
from tests.upstream_fake import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]
A_HEADERS = {"anthropic-version": "2023-06-01"}


@pytest.fixture
def bad_key(gateway: Gateway) -> Iterator[dict[str, Any]]:
    """A key whose failures the test counts at the end."""
    created = gateway.create_key(name="bad-input")
    yield created


def check_failures_counted(gateway: Gateway, key_id: str, n: int) -> None:
    usage = gateway.wait_usage(key_id, n)
    assert usage["requests"] == n
    assert usage["failures_4xx"] == n
    assert usage["successes"] == 0


def test_invalid_json(gateway: Gateway, fake: FakeUpstream, bad_key: dict[str, Any]) -> None:
    mark = fake.mark()
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        for body in (b"{not json", b"", b"[1, 2]", b'"a string"', b'{"model": "gpt-4o", "messages": [}'):
            resp = http.post(
                "/v1/chat/completions",
                content=body,
                headers={"Authorization": f"Bearer {bad_key['key']}", "Content-Type": "application/json"},
            )
            assert resp.status_code == 400, (body, resp.text)
            openai_error(resp)
            assert_ratelimit_headers(resp.headers)
        resp = http.post("/v1/messages", content=b"{oops", headers={"x-api-key": bad_key["key"], **A_HEADERS})
        assert resp.status_code == 400
        anthropic_error(resp, type_="invalid_request_error")
    assert fake.since(mark) == []
    check_failures_counted(gateway, bad_key["id"], 6)


def test_missing_model(gateway: Gateway, fake: FakeUpstream, bad_key: dict[str, Any]) -> None:
    mark = fake.mark()
    auth = {"Authorization": f"Bearer {bad_key['key']}"}
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        for path, body in (
            ("/v1/chat/completions", {"messages": MESSAGES}),
            ("/v1/chat/completions", {"model": None, "messages": MESSAGES}),
            ("/v1/chat/completions", {"model": 42, "messages": MESSAGES}),
            ("/v1/embeddings", {"input": "x"}),
            ("/v1/responses", {"input": "x"}),
        ):
            resp = http.post(path, json=body, headers=auth)
            assert resp.status_code == 400, (path, body, resp.text)
            err = openai_error(resp)
            assert "model" in err["message"]
        resp = http.post(
            "/v1/messages",
            json={"max_tokens": 8, "messages": MESSAGES},
            headers={"x-api-key": bad_key["key"], **A_HEADERS},
        )
        assert resp.status_code == 400
        assert "model" in anthropic_error(resp, type_="invalid_request_error")["message"]
    assert fake.since(mark) == []
    check_failures_counted(gateway, bad_key["id"], 6)


def test_unknown_model(gateway: Gateway, fake: FakeUpstream, bad_key: dict[str, Any], clients: Any) -> None:
    mark = fake.mark()
    with pytest.raises(openai.NotFoundError) as o_exc:
        clients("openai", bad_key["key"]).chat.completions.create(model="llama-unknown-9", messages=MESSAGES)
    err = openai_error(o_exc.value.response, code="model_not_found")
    assert "llama-unknown-9" in err["message"]
    with pytest.raises(openai.NotFoundError):
        clients("openai", bad_key["key"]).embeddings.create(model="llama-unknown-9", input="x")
    with pytest.raises(anthropic.NotFoundError) as a_exc:
        clients("anthropic", bad_key["key"]).messages.create(model="llama-unknown-9", max_tokens=8, messages=MESSAGES)
    anthropic_error(a_exc.value.response, type_="not_found_error")
    assert fake.since(mark) == []
    check_failures_counted(gateway, bad_key["id"], 3)


def test_body_over_limit_is_413(gateway: Gateway, fake: FakeUpstream, bad_key: dict[str, Any]) -> None:
    prefix = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    big = prefix + b"x" * (MAX_BODY_BYTES + 1 - len(prefix) - len(suffix)) + suffix
    assert len(big) == MAX_BODY_BYTES + 1

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    mark = fake.mark()
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        resp = http.post("/v1/chat/completions", content=big, headers={"Authorization": f"Bearer {bad_key['key']}"})
        assert resp.status_code == 413, resp.text[:200]
        openai_error(resp)
        resp = http.post(
            "/v1/chat/completions", content=chunked(), headers={"Authorization": f"Bearer {bad_key['key']}"}
        )
        assert resp.status_code == 413, resp.text[:200]
        resp = http.post("/v1/messages", content=big, headers={"x-api-key": bad_key["key"], **A_HEADERS})
        assert resp.status_code == 413
        anthropic_error(resp)
        # Exactly at the limit is fine.
        ok = big[: len(prefix)] + b"x" * (MAX_BODY_BYTES - len(prefix) - len(suffix)) + suffix
        resp = http.post("/v1/chat/completions", content=ok, headers={"Authorization": f"Bearer {bad_key['key']}"})
        assert resp.status_code == 200, resp.text[:200]
    forwarded = fake.since(mark)
    assert len(forwarded) == 1 and forwarded[0].body == ok
    usage = gateway.wait_usage(bad_key["id"], 4)
    assert (usage["requests"], usage["failures_4xx"], usage["successes"]) == (4, 3, 1)


def test_wrong_method_is_405(gateway: Gateway, fake: FakeUpstream, bad_key: dict[str, Any]) -> None:
    mark = fake.mark()
    auth = {"Authorization": f"Bearer {bad_key['key']}"}
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        for method, path in (
            ("GET", "/v1/chat/completions"),
            ("PUT", "/v1/embeddings"),
            ("DELETE", "/v1/responses"),
            ("POST", "/v1/models"),
        ):
            resp = http.request(method, path, headers=auth)
            assert resp.status_code == 405, (method, path, resp.status_code)
            openai_error(resp)
        resp = http.get("/v1/messages", headers={"x-api-key": bad_key["key"], **A_HEADERS})
        assert resp.status_code == 405
        anthropic_error(resp, type_="invalid_request_error")
    assert fake.since(mark) == []
    check_failures_counted(gateway, bad_key["id"], 5)
