"""Refusals in the caller's dialect, as the official SDKs see them; and what each
refusal counts for the key."""

from __future__ import annotations

import math
import time

import anthropic
import msgspec
import openai
import pytest

from agentrouter._core import FakeClock, generate_key
from agentrouter.gateway.app import Gateway
from agentrouter.gateway.errors import Dialect, Kinds, error_body
from tests.gateway_fixtures import call, new_key, sdk_clients, settings_for, start_gateway, stored_usage

MESSAGES = [{"role": "user", "content": "Hi"}]
CHAT = msgspec.json.encode({"model": "mock-gpt", "messages": MESSAGES})
MSG = msgspec.json.encode({"model": "mock-claude", "max_tokens": 8, "messages": MESSAGES})


def test_error_bodies_in_both_dialects() -> None:
    o = msgspec.json.decode(error_body(Dialect.OPENAI, Kinds.MODEL_NOT_FOUND, 'no "x"', "req_1", "model"))
    assert o == {
        "error": {"message": 'no "x"', "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    }
    a = msgspec.json.decode(error_body(Dialect.ANTHROPIC, Kinds.RATE_LIMITED, "slow down", "req_2"))
    assert a == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}, "request_id": "req_2"}


async def _both_raise(
    app: Gateway, key: str, o_exc: type, a_exc: type, *, model: str = "mock-gpt", a_model: str = "mock-claude"
) -> tuple[openai.APIStatusError, anthropic.APIStatusError]:
    o, a = sdk_clients(app, key)
    with pytest.raises(o_exc) as oe:
        await o.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(a_exc) as ae:
        await a.messages.create(model=a_model, max_tokens=8, messages=MESSAGES)  # type: ignore[arg-type]
    return oe.value, ae.value  # type: ignore[return-value]


async def test_401_missing_key(gw: Gateway) -> None:
    # The SDKs refuse to send nothing; by hand, on both dialects' routes.
    o = await call(gw, "POST", "/v1/chat/completions", body=CHAT)
    a = await call(gw, "POST", "/v1/messages", body=MSG, headers={"authorization": "Bearer "})
    assert o.status == a.status == 401
    assert o.json()["error"]["code"] == "invalid_api_key"
    assert a.json()["error"]["type"] == "authentication_error" and "Missing" in a.json()["error"]["message"]


@pytest.mark.parametrize(
    "make_key",
    ["sk-ar-short", "sk-xx-" + "a" * 38, "CHECKSUM", "UNKNOWN", "DELETED", "EXPIRED"],
    ids=["length", "prefix", "checksum", "unknown", "deleted", "expired"],
)
async def test_401_causes(gw: Gateway, gw_clock: FakeClock, make_key: str) -> None:
    raw = make_key
    if make_key == "UNKNOWN":
        raw = generate_key()  # well formed, never stored
    elif make_key in ("CHECKSUM", "DELETED", "EXPIRED"):
        raw, key_id = await new_key(gw, expires_in=60 if make_key == "EXPIRED" else None)
        if make_key == "CHECKSUM":
            raw = raw[:-1] + ("A" if raw[-1] != "A" else "B")
        elif make_key == "DELETED":
            await gw.core.keys.delete(key_id)
        elif make_key == "EXPIRED":
            gw_clock.advance(61)
    oe, ae = await _both_raise(gw, raw, openai.AuthenticationError, anthropic.AuthenticationError)
    assert oe.status_code == ae.status_code == 401
    o_err = oe.response.json()["error"]
    assert o_err["code"] == "invalid_api_key" and o_err["message"]
    assert ae.response.json()["error"]["type"] == "authentication_error"
    assert ae.response.json()["request_id"] == ae.response.headers["request-id"]
    for resp in (oe.response, ae.response):
        assert "x-ratelimit-limit" not in resp.headers
        if len(raw) > 12:  # never more of a key than its display prefix
            assert raw[12:20] not in resp.text and raw not in resp.text


async def test_unknown_key_message_shows_only_the_display_prefix(gw: Gateway) -> None:
    raw = generate_key()
    reply = await call(gw, "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {raw}"}, body=CHAT)
    message = reply.json()["error"]["message"]
    assert raw[:12] in message and raw[12:] not in message


async def test_bearer_scheme_is_case_insensitive_and_x_api_key_works(gw: Gateway) -> None:
    key, key_id = await new_key(gw)
    for headers in (
        {"authorization": f"bearer {key}"},
        {"authorization": f"BEARER  {key}"},
        {"x-api-key": key},
        {"authorization": "Basic Zm9vOmJhcg==", "x-api-key": key},
    ):
        reply = await call(gw, "POST", "/v1/chat/completions", headers=headers, body=CHAT)
        assert reply.status == 200, (headers, reply.body)
    reply = await call(gw, "POST", "/v1/chat/completions", headers={"authorization": "Basic Zm9vOmJhcg=="}, body=CHAT)
    assert reply.status == 401
    assert (await stored_usage(gw, key_id)).requests == 4


async def test_manage_scope_key_is_refused_with_403(gw: Gateway) -> None:
    key, key_id = await new_key(gw, scope="manage")
    oe, ae = await _both_raise(gw, key, openai.PermissionDeniedError, anthropic.PermissionDeniedError)
    assert oe.status_code == ae.status_code == 403
    assert ae.response.json()["error"]["type"] == "permission_error"
    totals = await stored_usage(gw, key_id)
    assert (totals.requests, totals.failures_4xx) == (2, 2)


async def test_429_headers_and_sdk_errors(gw: Gateway, gw_clock: FakeClock) -> None:
    key, key_id = await new_key(gw, requests=2, interval=60)
    o, _a = sdk_clients(gw, key)
    ok = await o.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES)
    assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"]) == ("2", "1")
    reset = int(ok.headers["x-ratelimit-reset"])
    assert reset == math.ceil(gw_clock.unix + 30)  # on the gateway's (fake) clock: one of 2 per 60 s back in 30 s
    await o.chat.completions.create(model="mock-gpt", messages=MESSAGES)  # the last one
    oe, ae = await _both_raise(gw, key, openai.RateLimitError, anthropic.RateLimitError)
    assert oe.status_code == 429 and ae.status_code == 429
    assert oe.response.json()["error"]["code"] == "rate_limit_exceeded"
    assert ae.response.json()["error"]["type"] == "rate_limit_error"
    for resp in (oe.response, ae.response):
        h = resp.headers
        assert h["x-ratelimit-limit"] == "2" and h["x-ratelimit-remaining"] == "0"
        retry = int(h["retry-after"])
        retry_ms = int(h["retry-after-ms"])
        assert 1 <= retry <= 30 and retry == math.ceil(retry_ms / 1000)
    totals = await stored_usage(gw, key_id)
    assert (totals.requests, totals.successes, totals.failures_4xx) == (4, 2, 2)


async def test_sdk_retry_waits_for_retry_after(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Real clock: 1 request per second; the SDK's own retry gets the second one through."""
    app = await start_gateway(settings_for(tmp_path / "data"))
    try:
        key, key_id = await new_key(app, requests=1, interval=1)
        o, _ = sdk_clients(app, key, max_retries=2)
        started = time.monotonic()
        await o.chat.completions.create(model="mock-gpt", messages=MESSAGES)
        await o.chat.completions.create(model="mock-gpt", messages=MESSAGES)
        took = time.monotonic() - started
        assert 0.5 <= took < 5, took
        totals = await stored_usage(app, key_id)
        assert totals.successes == 2 and totals.failures_4xx >= 1
    finally:
        await app.shutdown()


async def test_bad_requests_counted_and_in_dialect(gw: Gateway) -> None:
    key, key_id = await new_key(gw)
    bearer = {"authorization": f"Bearer {key}"}
    xkey = {"x-api-key": key}
    cases = [
        ("POST", "/v1/chat/completions", bearer, b"{not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", bearer, b"[1, 2]", 400, None),
        ("POST", "/v1/chat/completions", bearer, b'{"messages": []}', 400, None),
        ("POST", "/v1/chat/completions", bearer, b'{"model": 7}', 400, None),
        ("POST", "/v1/chat/completions", bearer, b'{"model": "nope", "messages": []}', 404, "model_not_found"),
        ("GET", "/v1/chat/completions", bearer, b"", 405, "method_not_allowed"),
        ("POST", "/v1/models", bearer, b"", 405, "method_not_allowed"),
        ("POST", "/v1/messages", xkey, b'{"model": "nope", "max_tokens": 1, "messages": []}', 404, "not_found_error"),
        ("GET", "/v1/messages", xkey, b"", 405, "invalid_request_error"),
        ("POST", "/v1/messages/count_tokens", xkey, b"{", 400, "invalid_request_error"),
    ]
    for method, path, headers, body, status, code in cases:
        reply = await call(gw, method, path, headers=headers, body=body)
        assert reply.status == status, (path, body, reply.body)
        doc = reply.json()
        if path.startswith("/v1/messages"):
            assert (
                doc["type"] == "error" and doc["error"]["message"] and doc["request_id"] == reply.headers["request-id"]
            )
            if code:
                assert doc["error"]["type"] == code
        else:
            assert set(doc["error"]) == {"message", "type", "param", "code"}
            if code:
                assert doc["error"]["code"] == code
        if status == 405:
            assert reply.headers["allow"] in ("GET", "POST")
    totals = await stored_usage(gw, key_id)
    assert (totals.requests, totals.failures_4xx, totals.successes) == (len(cases), len(cases), 0)


async def test_sdk_bad_request_and_not_found(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    await _both_raise(gw, key, openai.NotFoundError, anthropic.NotFoundError, model="nope", a_model="nope")
    await _both_raise(gw, key, openai.BadRequestError, anthropic.BadRequestError, model="", a_model="")


async def test_body_limit_413(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await start_gateway(settings_for(tmp_path / "data", AGENTROUTER_MAX_BODY_BYTES="2048"))
    try:
        key, key_id = await new_key(app)
        head = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "'
        tail = b'"}]}'
        exact = head + b"x" * (2048 - len(head) - len(tail)) + tail
        over = head + b"x" * (2049 - len(head) - len(tail)) + tail
        auth = {"authorization": f"Bearer {key}"}
        # Declared too large: refused before reading.
        r = await call(
            app, "POST", "/v1/chat/completions", headers={**auth, "content-length": str(len(over))}, body=over
        )
        assert r.status == 413 and r.json()["error"]["code"] == "request_too_large"
        # Undeclared (chunked): refused while reading.
        r = await call(app, "POST", "/v1/chat/completions", headers=auth, body_parts=[over[:1000], over[1000:]])
        assert r.status == 413
        r = await call(app, "POST", "/v1/messages", headers={"x-api-key": key}, body=over)
        assert r.status == 413 and r.json()["error"]["type"] == "request_too_large"
        r = await call(app, "POST", "/v1/chat/completions", headers=auth, body_parts=[exact[:1000], exact[1000:]])
        assert r.status == 200
        totals = await stored_usage(app, key_id)
        assert (totals.requests, totals.failures_4xx, totals.successes) == (4, 3, 1)
    finally:
        await app.shutdown()


async def test_unknown_path_is_404_in_dialect(gw: Gateway) -> None:
    r = await call(gw, "POST", "/v1/nothing-here")
    assert r.status == 404 and r.json()["error"]["code"] == "unknown_url"
    r = await call(gw, "POST", "/v1/messages/batches")
    assert r.status == 404 and r.json()["error"]["type"] == "not_found_error"
    assert r.headers["x-request-id"]


async def test_request_ids_are_unique_and_returned(gw: Gateway) -> None:
    key, _ = await new_key(gw)
    ids = set()
    for _ in range(3):
        r = await call(gw, "POST", "/v1/messages", headers={"x-api-key": key}, body=MSG)
        assert r.headers["x-request-id"] == r.headers["request-id"]
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 3


async def test_limit_change_applies_on_the_next_request(gw: Gateway) -> None:
    """The key table is reloaded when the shared generation moves, not only for new keys."""
    key, key_id = await new_key(gw)
    ok = await call(gw, "POST", "/v1/chat/completions", headers={"x-api-key": key}, body=CHAT)
    assert ok.status == 200 and "x-ratelimit-limit" not in ok.headers  # no limit: no numbers to give
    await gw.core.keys.update(key_id, requests=1, interval=3600)
    first = await call(gw, "POST", "/v1/chat/completions", headers={"x-api-key": key}, body=CHAT)
    second = await call(gw, "POST", "/v1/chat/completions", headers={"x-api-key": key}, body=CHAT)
    assert (first.status, second.status) == (200, 429)
    assert first.headers["x-ratelimit-limit"] == "1"
    await gw.core.keys.update(key_id, expires_at=0.0)
    assert (await call(gw, "POST", "/v1/chat/completions", headers={"x-api-key": key}, body=CHAT)).status == 401


async def test_fallback_gets_other_paths_and_the_lifespan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    events: list[str] = []

    class Console:
        async def startup(self, core: object) -> None:
            events.append("startup")

        async def shutdown(self) -> None:
            events.append("shutdown")

        async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
            events.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"console"})

    from agentrouter.gateway.app import create_app

    app = create_app(settings_for(tmp_path / "data"), fallback=Console())
    await app.startup()
    try:
        assert (await call(app, "GET", "/api/v1/keys")).body == b"console"
        assert (await call(app, "GET", "/v1/nothing")).status == 404  # /v1 stays the gateway's
    finally:
        await app.shutdown()
    assert events == ["startup", "/api/v1/keys", "shutdown"]
