"""Session expiry on the fake clock, and the cookie of an https public URL
(``__Host-`` prefix, ``Secure``): the management API in-process, driven like Granian
drives it (``tests.gateway_fixtures.call``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from agentrouter._core import FakeClock
from agentrouter.actor import INSTANCE
from agentrouter.api import build_api
from agentrouter.api.app import ManagementApi
from agentrouter.core import Core
from tests.accounts_web import STRONG
from tests.conftest import settings_on
from tests.gateway_fixtures import Reply, call

PUBLIC = "https://gateway.example.com"
DAY = 86400.0


@pytest.fixture
async def api(data_dir: Path, clock: FakeClock) -> AsyncIterator[ManagementApi]:
    settings = settings_on(data_dir, AGENTROUTER_PUBLIC_URL=PUBLIC, AGENTROUTER_ACCOUNTS_REGISTRATION="open")
    core = await Core.from_settings(settings, clock=clock)
    assert core.accounts is not None
    await core.accounts.create_user(INSTANCE, email="clock@example.com", password=STRONG)
    app = build_api(core, settings=settings, run_monitor=False)
    try:
        yield app
    finally:
        await app.shutdown()
        await core.close()


def cookies_of(reply: Reply) -> list[str]:
    return [v.decode() for k, v in reply.raw_headers if k == b"set-cookie"]


async def sign_in(api: ManagementApi) -> tuple[str, str]:
    body = msgspec.json.encode({"email": "clock@example.com", "password": STRONG})
    reply = await call(
        api,
        "POST",
        "/api/v1/auth/signin",
        headers={"content-type": "application/json", "origin": PUBLIC},
        body=body,
    )
    assert reply.status == 200, reply.body
    cookie = next(c for c in cookies_of(reply) if c.startswith("__Host-agentrouter_session="))
    return cookie, reply.json()["csrf_token"]


async def test_https_cookie_is_host_prefixed_and_secure(api: ManagementApi) -> None:
    cookie, _ = await sign_in(api)
    attrs = [a.strip() for a in cookie.split(";")]
    assert "Secure" in attrs and "HttpOnly" in attrs and "SameSite=Lax" in attrs and "Path=/" in attrs
    assert not any(a.lower().startswith("domain=") for a in attrs)  # host-only, as __Host- requires
    assert f"Max-Age={int(30 * DAY)}" in attrs
    # The plain name is not read when the server is https (a planted, unprefixed cookie is ignored).
    token = cookie.split(";")[0].split("=", 1)[1]
    plain = await call(api, "GET", "/api/v1/me", headers={"cookie": f"agentrouter_session={token}"})
    assert plain.status == 401


async def test_session_expires_after_thirty_days(api: ManagementApi, clock: FakeClock) -> None:
    cookie, _ = await sign_in(api)
    jar = cookie.split(";")[0]
    assert (await call(api, "GET", "/api/v1/me", headers={"cookie": jar})).status == 200
    clock.advance(30 * DAY - 5)
    assert (await call(api, "GET", "/api/v1/me", headers={"cookie": jar})).status == 200
    clock.advance(10)
    expired = await call(api, "GET", "/api/v1/me", headers={"cookie": jar})
    assert expired.status == 401 and expired.json()["error"]["code"] == "session_ended"
    cleared = cookies_of(expired)
    assert cleared and cleared[0].startswith("__Host-agentrouter_session=;") and "Max-Age=0" in cleared[0]


async def test_origin_is_matched_against_the_public_url(api: ManagementApi) -> None:
    cookie, csrf = await sign_in(api)
    jar = cookie.split(";")[0]
    base = {"cookie": jar, "x-csrf-token": csrf, "content-type": "application/json"}
    other = await call(api, "POST", "/api/v1/auth/signout", headers={**base, "origin": "http://gateway.example.com"})
    assert other.status == 403  # http is another origin than https
    ok = await call(api, "POST", "/api/v1/me/sessions/end-others", headers={**base, "origin": PUBLIC})
    assert ok.status == 200, ok.body
