"""The request side of the management API, in process (mounted in the gateway as in a
worker): hostile bodies, the shared authenticator's rules and headers, HEAD, OPTIONS
and CORS, and the one error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from agentrouter.api import build_api
from agentrouter.core import StateError
from agentrouter.gateway.app import Gateway, create_app
from agentrouter.store import StoreError
from tests.gateway_fixtures import call, settings_for

ORIGIN = "https://console.example.com"
NESTED = b"[" * 1000 + b"]" * 1000


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = settings_for(tmp_path / "data", AGENTROUTER_CORS_ALLOW_ORIGINS=ORIGIN)
    gateway = create_app(settings, fallback=build_api(settings=settings, run_monitor=False))
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()


async def admin(app: Gateway, **options: object) -> dict[str, str]:
    created = await app.core.keys.create(name="admin", scope="manage", **options)  # type: ignore[arg-type]
    return {"authorization": f"Bearer {created.key}", "content-type": "application/json"}


async def names(app: Gateway, auth: dict[str, str]) -> list[str | None]:
    listed = await call(app, "GET", "/api/v1/keys", headers=auth)
    return [k["name"] for k in listed.json()["data"]]


async def test_deeply_nested_metadata_is_400_and_writes_nothing(app: Gateway) -> None:
    auth = await admin(app)
    for body in (
        b'{"name": "deep", "metadata": {"x": ' + NESTED + b"}}",
        b'{"name": "deep", "metadata": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    ):
        r = await call(app, "POST", "/api/v1/keys", headers=auth, body=body)
        assert r.status == 400, r.body[:300]
        assert r.json()["error"]["type"] == "invalid_request" and "nested too deeply" in r.json()["error"]["message"]
    key_id = (await app.core.keys.list())[0].id
    r = await call(app, "PATCH", f"/api/v1/keys/{key_id}", headers=auth, body=b'{"metadata": ' + NESTED + b"}")
    assert r.status == 400
    assert await names(app, auth) == ["admin"]


async def test_invalid_utf8_in_a_body_is_400(app: Gateway) -> None:
    auth = await admin(app)
    for body in (b'{"name": "caf\xe9"}', b'{"name": "x", "metadata": {"\xff": 1}}'):
        r = await call(app, "POST", "/api/v1/keys", headers=auth, body=body)
        assert r.status == 400 and "UTF-8" in r.json()["error"]["message"], r.json()
    assert await names(app, auth) == ["admin"]


async def test_the_body_limits(app: Gateway) -> None:
    auth = await admin(app)
    r = await call(app, "POST", "/api/v1/keys", headers={**auth, "content-length": str(10**9)}, body=b"{}")
    assert r.status == 413 and r.headers["connection"] == "close"
    r = await call(app, "POST", "/api/v1/keys", headers={**auth, "content-length": "+2"}, body=b"{}")
    assert r.status == 400 and "Content-Length" in r.json()["error"]["message"]


async def test_the_same_header_rules_as_v1(app: Gateway) -> None:
    auth = await admin(app)
    one = auth["authorization"].removeprefix("Bearer ")
    other = (await app.core.keys.create(scope="manage")).key
    for headers in (
        [("authorization", f"Bearer {one}"), ("authorization", f"Bearer {other}")],
        [("authorization", f"Bearer {one}"), ("x-api-key", other)],
        [("x-api-key", one), ("x-api-key", one)],
    ):
        r = await call(app, "GET", "/api/v1/keys", headers=headers)
        assert r.status == 401 and "Ambiguous credentials" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await call(app, "GET", "/api/v1/keys", headers=[("authorization", f"Bearer {one}"), ("x-api-key", one)])
    assert r.status == 200


async def test_a_deleted_management_key_is_refused_as_deleted(app: Gateway) -> None:
    auth = await admin(app)
    doomed = await app.core.keys.create(scope="manage")
    await app.core.keys.delete(doomed.row.id)
    assert (await call(app, "GET", "/api/v1/keys", headers=auth)).status == 200  # the table reloaded
    r = await call(app, "GET", "/api/v1/keys", headers={"x-api-key": doomed.key})
    assert r.status == 401 and "has been deleted" in r.json()["error"]["message"]


async def test_429_carries_retry_after_and_retry_after_ms(app: Gateway) -> None:
    auth = await admin(app, requests=1, interval=60)
    assert (await call(app, "GET", "/api/v1/keys", headers=auth)).status == 200
    r = await call(app, "GET", "/api/v1/keys", headers=auth)
    assert r.status == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert r.headers["retry-after"] == "60" and r.headers["retry-after-ms"] == "60000"
    assert r.headers["x-ratelimit-limit"] == "1" and r.headers["x-ratelimit-remaining"] == "0"
    assert [n for n, _ in r.raw_headers].count(b"retry-after") == 1


async def test_head_on_get_operations(app: Gateway) -> None:
    auth = await admin(app)
    key_id = (await app.core.keys.list())[0].id
    # A fixed range for the usage report: by default it ends "now", whose float can take
    # one digit more or less from one call to the next.
    fixed = {"/api/v1/usage": b"since=1700000000&until=1700086400"}
    for path in ("/api/v1/keys", f"/api/v1/keys/{key_id}", "/api/v1/usage", "/api/v1/alerts", "/api/openapi.json"):
        query = fixed.get(path, b"")
        get = await call(app, "GET", path, headers=auth, query=query)
        head = await call(app, "HEAD", path, headers=auth, query=query)
        assert (get.status, head.status, head.body) == (200, 200, b""), path
        assert head.headers["content-length"] == str(len(get.body)), path
    assert (await call(app, "HEAD", "/api/v1/keys")).status == 401  # still needs a key
    r = await call(app, "HEAD", f"/api/v1/keys/{key_id}/rotate", headers=auth)
    assert r.status == 405 and r.headers["allow"] == "POST"


async def test_options_without_a_key_and_cors(app: Gateway) -> None:
    r = await call(app, "OPTIONS", "/api/v1/keys")
    assert (r.status, r.headers["allow"]) == (204, "GET, POST, HEAD, OPTIONS")
    r = await call(app, "OPTIONS", "/api/v1/keys/key_0123/rotate")
    assert (r.status, r.headers["allow"]) == (204, "POST, OPTIONS")
    assert (await call(app, "OPTIONS", "/api/v1/nothing")).status == 404
    r = await call(
        app,
        "OPTIONS",
        "/api/v1/keys/key_0123",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "PATCH",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert r.status == 204 and r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-methods"] == "DELETE, GET, PATCH, HEAD, OPTIONS"
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"
    auth = await admin(app)
    listed = await call(app, "GET", "/api/v1/keys", headers={**auth, "origin": ORIGIN})
    assert listed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-ratelimit-remaining" in listed.headers["access-control-expose-headers"]


async def test_one_mapping_of_failures(app: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = await admin(app)

    def raising(exc: Exception) -> object:
        async def fail(**kwargs: object) -> list[object]:
            raise exc

        return fail

    monkeypatch.setattr(app.core.keys, "list", raising(StoreError("no free slot")))
    assert (await call(app, "GET", "/api/v1/keys", headers=auth)).status == 409  # a refusal of the store
    monkeypatch.setattr(app.core.keys, "list", raising(StateError("the database /x is locked")))
    r = await call(app, "GET", "/api/v1/keys", headers=auth)
    assert r.status == 503 and "/x" not in r.body.decode()  # the state failing: retry later

    monkeypatch.setattr(app.core.keys, "list", raising(RuntimeError("a bug")))
    r = await call(app, "GET", "/api/v1/keys", headers=auth)
    assert r.status == 500 and r.json()["error"]["type"] == "api_error"
    assert msgspec.json.decode(r.body)["error"]["message"] == "Internal error in the management API."


async def test_metadata_nested_past_the_limit_is_422_naming_the_field(app: Gateway) -> None:
    auth = await admin(app)
    for depth in (33, 900, 990):  # near 1000 the decoder itself gives up (400)
        metadata = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
        r = await call(app, "POST", "/api/v1/keys", headers=auth, body=b'{"metadata": ' + metadata + b"}")
        assert r.status in ((422,) if depth < 900 else (400, 422)), (depth, r.body[:200])
        assert "nested" in r.json()["error"]["message"]
        if r.status == 422:
            assert r.json()["error"]["field"] == "metadata"
    ok = b'{"metadata": {"x": ' + b"[" * 31 + b"]" * 31 + b"}}"
    assert (await call(app, "POST", "/api/v1/keys", headers=auth, body=ok)).status == 201
