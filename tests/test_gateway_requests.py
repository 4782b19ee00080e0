"""The request side of the gateway, in process: hostile bodies and headers get a 4xx in
the dialect with nothing forwarded, every answer to a valid key is counted once
(the gateway's own 500 included), HEAD / OPTIONS / CORS, and /healthz and /readyz."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentrouter.gateway import mock
from agentrouter.gateway.app import Gateway
from agentrouter.store import StoreError
from tests.gateway_fixtures import (
    FakeUpstream,
    call,
    json_handler,
    new_key,
    settings_for,
    start_gateway,
    stored_usage,
)

ORIGIN = "https://app.example.com"
NESTED = b"[" * 1000 + b"]" * 1000  # 2 KB: ~1000 levels, beyond msgspec's recursion limit
CHAT = {"id": "c", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def toml(base_url: str) -> str:
    return f"""
[server]
cors_allow_origins = ["{ORIGIN}"]

[[providers]]
name = "oai"
type = "openai"
base_url = "{base_url}"
api_key = "sk-up"
models = ["gpt-*"]

[[providers]]
name = "ant"
type = "anthropic"
base_url = "{base_url}"
api_key = "sk-ant-up"
models = ["claude-*"]

[[providers]]
name = "mock"
type = "mock"
"""


@pytest.fixture
async def app(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    upstream.routes["/v1/chat/completions"] = json_handler(CHAT)
    gw = await start_gateway(settings_for(tmp_path / "data", toml(upstream.base_url)))
    try:
        yield gw
    finally:
        await gw.shutdown()


def oa(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


def an(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}


# ------------------------------------------------------------------ bad input


async def test_deeply_nested_json_is_400_in_the_dialect(app: Gateway, upstream: FakeUpstream) -> None:
    key, key_id = await new_key(app)
    for body in (
        b'{"model": "gpt-4o", "x": ' + NESTED + b"}",  # in a field the gateway never reads
        b'{"x": ' + NESTED + b', "model": "gpt-4o"}',
        b'{"model": "gpt-4o", "x": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    ):
        r = await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=body)
        assert r.status == 400, r.body[:200]
        assert r.json()["error"]["code"] == "invalid_json" and "nested too deeply" in r.json()["error"]["message"]
    body = b'{"model": "claude-3", "max_tokens": 1, "messages": ' + NESTED + b"}"
    r = await call(app, "POST", "/v1/messages", headers=an(key), body=body)
    assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert upstream.seen == []
    usage = await stored_usage(app, key_id)
    assert (usage.requests, usage.failures_4xx, usage.failures_5xx) == (4, 4, 0)


async def test_invalid_utf8_anywhere_in_the_body_is_400(app: Gateway, upstream: FakeUpstream) -> None:
    key, _ = await new_key(app)
    for body in (
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "caf\xe9"}]}',  # latin-1, unread field
        b'{"model": "gpt-4o", "user": "\xc3"}',  # a truncated sequence
        b'{"model": "gpt-4o", "\xff": 1}',  # in a key
        b'{"model": "gpt-4o", "x": "\xed\xa0\x80"}',  # an encoded surrogate
    ):
        r = await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=body)
        assert r.status == 400, body
        assert r.json()["error"]["code"] == "invalid_json" and "UTF-8" in r.json()["error"]["message"]
    r = await call(app, "POST", "/v1/messages", headers=an(key), body=b'{"model": "claude-3", "x": "\xff"}')
    assert r.status == 400 and r.json()["type"] == "error"
    assert upstream.seen == []
    # Valid UTF-8 beyond ASCII passes untouched.
    body = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "café ☕"}]}'.encode()
    assert (await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=body)).status == 200
    assert upstream.seen[0].body == body


@pytest.mark.parametrize("length", ["+5", "-1", "1_0", "0x10", "1e3"])
async def test_a_content_length_that_is_not_digits_is_400(app: Gateway, length: str) -> None:
    key, _ = await new_key(app)
    r = await call(app, "POST", "/v1/chat/completions", headers={**oa(key), "content-length": length}, body=b"{}")
    assert r.status == 400 and "Content-Length" in r.json()["error"]["message"]


async def test_a_declared_length_over_the_limit_is_413_at_once_and_closes(app: Gateway) -> None:
    key, key_id = await new_key(app)
    r = await call(
        app,
        "POST",
        "/v1/chat/completions",
        headers={**oa(key), "content-length": str(10**9)},
        body_parts=[b"x" * 100, b"x" * 100],  # the rest never comes
    )
    assert r.status == 413 and r.json()["error"]["code"] == "request_too_large"
    assert r.headers["connection"] == "close"
    assert (await stored_usage(app, key_id)).failures_4xx == 1


async def test_ambiguous_credentials_on_v1(app: Gateway, upstream: FakeUpstream) -> None:
    one, _ = await new_key(app)
    two, _ = await new_key(app)
    body = msgspec.json.encode({"model": "gpt-4o", "messages": []})
    for headers in (
        [("authorization", f"Bearer {one}"), ("authorization", f"Bearer {two}")],
        [("x-api-key", one), ("x-api-key", one)],
        [("authorization", f"Bearer {one}"), ("x-api-key", two)],
    ):
        r = await call(app, "POST", "/v1/chat/completions", headers=headers, body=body)
        assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert "Ambiguous credentials" in r.json()["error"]["message"]
    ok = await call(
        app, "POST", "/v1/chat/completions", headers=[("authorization", f"Bearer {one}"), ("x-api-key", one)], body=body
    )
    assert ok.status == 200
    assert len(upstream.seen) == 1


async def test_a_deleted_key_is_refused_as_deleted_after_a_reload(app: Gateway) -> None:
    key, key_id = await new_key(app)
    await app.core.keys.delete(key_id)
    await new_key(app)  # another change: the table reloads without the deleted key
    r = await call(app, "GET", "/v1/models", headers=oa(key))
    assert r.status == 401 and "has been deleted" in r.json()["error"]["message"], r.json()


# ------------------------------------------------------------------ every answer is counted


async def test_every_answer_is_counted_the_500_path_too(app: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    key, key_id = await new_key(app)
    chat = msgspec.json.encode({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    statuses = [(await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=chat)).status]
    statuses.append(
        (await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=b'{"model": "nope"}')).status
    )
    big = b'{"model": "mock-gpt", "x": "' + b"x" * app.settings.max_body_bytes + b'"}'
    statuses.append((await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=big)).status)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the mock")

    monkeypatch.setattr(mock, "handle", broken)
    for _ in range(2):
        r = await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=chat)
        statuses.append(r.status)
        assert r.json()["error"]["code"] == "internal_error"
    assert statuses == [200, 404, 413, 500, 500]
    usage = await stored_usage(app, key_id)
    assert (usage.requests, usage.successes, usage.failures_4xx, usage.failures_5xx) == (5, 1, 2, 2)


async def test_the_projects_own_failures_are_503_and_counted(app: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    key, key_id = await new_key(app)

    def failing(*args: Any) -> Any:
        raise StoreError("the store is gone")

    monkeypatch.setattr(mock, "handle", failing)
    body = msgspec.json.encode({"model": "mock-claude", "max_tokens": 1, "messages": []})
    r = await call(app, "POST", "/v1/messages", headers=an(key), body=body)
    assert r.status == 503 and r.json()["error"]["type"] == "api_error"
    assert "the store is gone" not in r.body.decode()  # details go to the log
    assert (await stored_usage(app, key_id)).failures_5xx == 1


# ------------------------------------------------------------------ HEAD, OPTIONS, CORS


async def test_head_answers_like_get_without_the_body(app: Gateway) -> None:
    key, key_id = await new_key(app)
    for path in ("/v1/models", "/v1/models/gpt-4o"):
        get = await call(app, "GET", path, headers=oa(key))
        head = await call(app, "HEAD", path, headers=oa(key))
        assert (get.status, head.status) == (200, 200)
        assert head.body == b"" and head.headers["content-length"] == str(len(get.body))
        assert head.headers["content-type"] == get.headers["content-type"]
        assert "x-request-id" in head.headers
    r = await call(app, "HEAD", "/v1/chat/completions", headers=oa(key))
    assert r.status == 405 and r.headers["allow"] == "POST"
    assert (await stored_usage(app, key_id)).requests == 5


async def test_options_needs_no_key_and_lists_the_methods(app: Gateway) -> None:
    r = await call(app, "OPTIONS", "/v1/chat/completions")
    assert (r.status, r.headers["allow"], r.body) == (204, "POST, OPTIONS", b"")
    assert "access-control-allow-origin" not in r.headers
    r = await call(app, "OPTIONS", "/v1/models")
    assert (r.status, r.headers["allow"]) == (204, "GET, HEAD, OPTIONS")
    # A preflight from an origin not allowed: no CORS headers, so the browser refuses.
    r = await call(
        app,
        "OPTIONS",
        "/v1/chat/completions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert r.status == 204 and not any(h.startswith("access-control-") for h in r.headers)


async def test_a_preflight_from_an_allowed_origin(app: Gateway) -> None:
    requested = (
        "authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-organization, "
        "anthropic-version, anthropic-dangerous-direct-browser-access, x-evil"
    )
    r = await call(
        app,
        "OPTIONS",
        "/v1/messages",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": requested,
        },
    )
    assert r.status == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-methods"] == "POST, OPTIONS"
    allowed = r.headers["access-control-allow-headers"].split(", ")
    assert allowed == [h.strip() for h in requested.split(",")][:-1]  # all but x-evil
    assert r.headers["access-control-max-age"] == "600"
    assert [n for n, _ in r.raw_headers].count(b"access-control-allow-origin") == 1


async def test_answers_to_an_allowed_origin_expose_the_headers(app: Gateway) -> None:
    key, _ = await new_key(app, requests=2, interval=60)
    body = msgspec.json.encode({"model": "gpt-4o", "messages": []})
    headers = {**oa(key), "origin": ORIGIN}
    ok = await call(app, "POST", "/v1/chat/completions", headers=headers, body=body)
    assert ok.status == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    exposed = ok.headers["access-control-expose-headers"].split(", ")
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "retry-after-ms"):
        assert name in exposed
    assert {"x-request-id", "request-id"} <= set(exposed)
    assert ok.headers["vary"] == "origin" and ok.headers["access-control-allow-credentials"] == "true"
    await call(app, "POST", "/v1/chat/completions", headers=headers, body=body)
    limited = await call(app, "POST", "/v1/chat/completions", headers=headers, body=body)
    assert limited.status == 429 and limited.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after-ms" in limited.headers
    other = await call(app, "POST", "/v1/chat/completions", headers={**oa(key), "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_a_wildcard_origin_never_allows_credentials(tmp_path: Path) -> None:
    app = await start_gateway(settings_for(tmp_path / "data", AGENTROUTER_CORS_ALLOW_ORIGINS="*"))
    try:
        r = await call(
            app,
            "OPTIONS",
            "/v1/chat/completions",
            headers={"origin": "https://any.example", "access-control-request-method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers
    finally:
        await app.shutdown()


# ------------------------------------------------------------------ health


async def test_healthz_and_readyz(app: Gateway) -> None:
    key, key_id = await new_key(app)
    for path, document in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
        r = await call(app, "GET", path)
        assert (r.status, r.json()) == (200, document)
        head = await call(app, "HEAD", path)
        assert (head.status, head.body) == (200, b"")
        assert (await call(app, "POST", path)).status == 405
        assert (await call(app, "GET", "/v1" + path, headers=oa(key))).status == 404  # never under /v1
    assert (await stored_usage(app, key_id)).requests == 0  # not usage (nor are unknown /v1 paths)


async def test_readyz_names_what_is_broken(app: Gateway) -> None:
    db = app.core.store.path
    moved = db.with_name("moved.db")
    os.replace(db, moved)  # the file this worker opened is no longer the data directory's
    try:
        r = await call(app, "GET", "/readyz")
        assert r.status == 503 and r.json()["status"] == "unavailable"
        assert "store: its file was removed or replaced" in r.json()["reason"]
        assert str(db) not in r.body.decode()  # no paths for unauthenticated callers
        assert (await call(app, "GET", "/healthz")).status == 200  # alive all the same
    finally:
        os.replace(moved, db)
    assert (await call(app, "GET", "/readyz")).status == 200
    region = app.core.limiter.path
    os.replace(region, region + ".old")
    r = await call(app, "GET", "/readyz")
    assert r.status == 503 and "limiter: its file was removed or replaced" in r.json()["reason"]
