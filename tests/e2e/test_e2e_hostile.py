"""Hostile callers against the real ``agentrouter serve --workers 2``: deep nesting and
invalid UTF-8 are 400s with nothing forwarded or written, a stalled or trickling body
is a 408 and a huge declared body a 413 at once, both closing the connection (seen on
a raw socket), ambiguous credentials and deleted keys are refused saying why, and
HEAD, OPTIONS, a real CORS preflight, /healthz and /readyz."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx

from tests.e2e.conftest import (
    BODY_IDLE_TIMEOUT,
    BODY_TIMEOUT,
    CORS_ORIGIN,
    Gateway,
    anthropic_error,
    openai_error,
)
from tests.upstream_fake import FakeUpstream

NESTED = b"[" * 1000 + b"]" * 1000
A_HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
GRACE = 1.5
"""Seconds past a timeout the answer may take (the reader's sweep, a busy machine)."""


class Raw:
    """One HTTP/1.1 connection on a plain socket: what a misbehaving client does."""

    def __init__(self, gateway: Gateway) -> None:
        self.sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self, timeout: float) -> tuple[bytes, bool, float]:
        """Everything received within ``timeout`` seconds, whether the server closed the
        connection, and the seconds until the first byte."""
        self.sock.settimeout(timeout)
        started = time.monotonic()
        first = None
        data = b""
        closed = False
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                if first is None:
                    first = time.monotonic() - started
                data += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
        return data, closed, first if first is not None else timeout

    def close(self) -> None:
        self.sock.close()


def head(key: str, path: str, length: int, *, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def body_of(data: bytes) -> Any:
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_deep_nesting_is_400_on_v1_and_api(gateway: Gateway, fake: FakeUpstream) -> None:
    created = gateway.create_key(name="nesting")
    manage = gateway.cli_json("keys", "create", "--name", "nesting-admin", "--scope", "manage")
    before = [k["id"] for k in gateway.cli_json("keys", "list")]
    mark = fake.mark()
    auth = {"Authorization": f"Bearer {created['key']}", "content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        resp = http.post("/v1/chat/completions", content=b'{"model": "gpt-4o", "x": ' + NESTED + b"}", headers=auth)
        assert resp.status_code == 400, resp.text[:300]
        assert "nested too deeply" in openai_error(resp, code="invalid_json")["message"]
        resp = http.post(
            "/v1/messages",
            content=b'{"model": "claude-3-5-haiku-20241022", "max_tokens": 1, "messages": ' + NESTED + b"}",
            headers={"x-api-key": created["key"], **A_HEADERS},
        )
        assert resp.status_code == 400
        anthropic_error(resp, type_="invalid_request_error")
        resp = http.post(
            "/api/v1/keys",
            content=b'{"name": "deep", "metadata": {"x": ' + NESTED + b"}}",
            headers={"Authorization": f"Bearer {manage['key']}", "content-type": "application/json"},
        )
        assert resp.status_code == 400, resp.text[:300]
        assert resp.json()["error"]["type"] == "invalid_request"
    assert fake.since(mark) == []
    assert [k["id"] for k in gateway.cli_json("keys", "list")] == before
    usage = gateway.wait_usage(created["id"], 2)
    assert (usage["requests"], usage["failures_4xx"], usage["failures_5xx"]) == (2, 2, 0)


def test_invalid_utf8_is_400(gateway: Gateway, fake: FakeUpstream) -> None:
    created = gateway.create_key(name="utf8")
    mark = fake.mark()
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        resp = http.post(
            "/v1/chat/completions",
            content=b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "caf\xe9"}]}',
            headers={"Authorization": f"Bearer {created['key']}", "content-type": "application/json"},
        )
    assert resp.status_code == 400
    assert "UTF-8" in openai_error(resp, code="invalid_json")["message"]
    assert fake.since(mark) == []


def test_a_stalled_body_is_408_and_the_connection_closed(gateway: Gateway, fake: FakeUpstream) -> None:
    created = gateway.create_key(name="stall")
    mark = fake.mark()
    raw = Raw(gateway)
    try:
        raw.send(head(created["key"], "/v1/chat/completions", 100) + b'{"model": ')  # then silence
        data, closed, waited = raw.answer(BODY_IDLE_TIMEOUT + GRACE + 5)
    finally:
        raw.close()
    assert status_of(data) == 408, data[:300]
    assert b"connection: close" in data.lower()
    assert body_of(data)["error"]["code"] == "request_timeout"
    assert closed, "the connection must be closed after the 408"
    assert BODY_IDLE_TIMEOUT <= waited < BODY_IDLE_TIMEOUT + GRACE, waited
    assert fake.since(mark) == []
    usage = gateway.wait_usage(created["id"], 1)
    assert (usage["requests"], usage["failures_4xx"]) == (1, 1)


def test_a_trickling_body_is_408_at_the_total_timeout(gateway: Gateway) -> None:
    created = gateway.create_key(name="trickle")
    raw = Raw(gateway)
    try:
        raw.send(head(created["key"], "/v1/messages", 10_000, extra="anthropic-version: 2023-06-01\r\n"))
        started = time.monotonic()
        raw.sock.settimeout(0.5)
        data = b""
        # A byte every 0.4 s: never idle for BODY_IDLE_TIMEOUT, never done.
        while time.monotonic() - started < BODY_TIMEOUT + GRACE + 5:
            try:
                raw.send(b" ")
                data = raw.sock.recv(65536)
                if data:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        waited = time.monotonic() - started
    finally:
        raw.close()
    assert status_of(data) == 408, data[:300]
    assert body_of(data)["type"] == "error" and body_of(data)["error"]["type"] == "invalid_request_error"
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + GRACE + 0.5, waited


def test_a_huge_declared_body_is_413_at_once_and_the_connection_closed(gateway: Gateway, fake: FakeUpstream) -> None:
    created = gateway.create_key(name="huge")
    mark = fake.mark()
    raw = Raw(gateway)
    try:
        raw.send(head(created["key"], "/v1/chat/completions", 10**9) + b"x" * 100)
        data, closed, waited = raw.answer(5.0)
    finally:
        raw.close()
    assert status_of(data) == 413, data[:300]
    assert body_of(data)["error"]["code"] == "request_too_large"
    assert closed and waited < 1.0, (closed, waited)
    assert fake.since(mark) == []


def test_a_huge_declared_body_on_the_api_is_413_at_once(gateway: Gateway) -> None:
    manage = gateway.cli_json("keys", "create", "--name", "huge-admin", "--scope", "manage")
    raw = Raw(gateway)
    try:
        raw.send(head(manage["key"], "/api/v1/keys", 10**9) + b"{")
        data, closed, waited = raw.answer(5.0)
    finally:
        raw.close()
    assert status_of(data) == 413 and closed and waited < 1.0, (data[:200], closed, waited)


def test_ambiguous_credentials_are_401_saying_why(gateway: Gateway, fake: FakeUpstream) -> None:
    one = gateway.create_key(name="amb-1")["key"]
    two = gateway.create_key(name="amb-2")["key"]
    mark = fake.mark()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        for headers in (
            [("Authorization", f"Bearer {one}"), ("Authorization", f"Bearer {two}")],
            [("x-api-key", one), ("x-api-key", two)],
            [("Authorization", f"Bearer {one}"), ("x-api-key", two)],
        ):
            resp = http.post("/v1/chat/completions", json=body, headers=headers)
            assert resp.status_code == 401
            assert "Ambiguous credentials" in openai_error(resp, code="invalid_api_key")["message"]
        same = http.post(
            "/v1/chat/completions", json=body, headers=[("Authorization", f"Bearer {one}"), ("x-api-key", one)]
        )
        assert same.status_code == 200
    assert len(fake.since(mark)) == 1


def test_a_deleted_key_is_refused_as_deleted_on_every_worker(gateway: Gateway) -> None:
    created = gateway.create_key(name="deleted-wording")
    gateway.cli("keys", "delete", created["id"], "--yes")
    gateway.create_key(name="after-delete")  # every worker reloads its table without the deleted key
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        for _ in range(6):  # fresh connections: both workers answer
            with httpx.Client(base_url=gateway.url, timeout=30.0) as fresh:
                resp = fresh.get("/v1/models", headers={"Authorization": f"Bearer {created['key']}"})
            assert resp.status_code == 401
            assert "has been deleted" in openai_error(resp)["message"], resp.text
        resp = http.get("/api/v1/keys", headers={"x-api-key": created["key"]})
        assert resp.status_code == 401 and "has been deleted" in resp.json()["error"]["message"]


def test_head_and_options(gateway: Gateway) -> None:
    created = gateway.create_key(name="head")
    auth = {"Authorization": f"Bearer {created['key']}"}
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        get = http.get("/v1/models", headers=auth)
        head_ = http.head("/v1/models", headers=auth)
        assert (get.status_code, head_.status_code, head_.content) == (200, 200, b"")
        assert head_.headers["content-length"] == str(len(get.content))
        options = http.options("/v1/chat/completions")  # no key
        assert (options.status_code, options.headers["allow"]) == (204, "POST, OPTIONS")
        options = http.options("/api/v1/keys")
        assert (options.status_code, options.headers["allow"]) == (204, "GET, POST, HEAD, OPTIONS")


def test_a_real_cors_preflight_then_the_request(gateway: Gateway) -> None:
    created = gateway.create_key(name="browser")
    # What a browser sends before the OpenAI JS SDK's POST from another origin.
    requested = (
        "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"
        "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
        "x-stainless-runtime-version,x-stainless-timeout"
    )
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        pre = http.options(
            "/v1/chat/completions",
            headers={
                "Origin": CORS_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": requested,
            },
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == CORS_ORIGIN
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert set(pre.headers["access-control-allow-headers"].split(", ")) == set(requested.split(","))
        resp = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {created['key']}", "Origin": CORS_ORIGIN},
        )
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == CORS_ORIGIN
        exposed = set(resp.headers["access-control-expose-headers"].split(", "))
        assert {"x-ratelimit-remaining", "retry-after-ms", "x-request-id"} <= exposed
        other = http.options(
            "/v1/chat/completions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert other.status_code == 204 and "access-control-allow-origin" not in other.headers


def test_healthz_and_readyz(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        for _ in range(4):
            assert http.get("/healthz").json() == {"status": "ok"}
            ready = http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert http.head("/readyz").status_code == 200
        assert http.get("/v1/healthz").status_code == 404
