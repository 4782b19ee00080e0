"""The gateway joined with the management API (as ``server.load_app`` builds it): one
core per worker, the API's lifespan inside the gateway's, the answers to paths
outside ``/v1`` and ``/api``, and the request log the gateway's usage recorder writes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentrouter.api import ManagementApi, build_api
from agentrouter.config import Settings
from agentrouter.core import Core
from agentrouter.gateway.app import Gateway, create_app
from tests.gateway_fixtures import call, new_key, settings_for
from tests.waiting import until

MESSAGES = [{"role": "user", "content": "Hi"}]
CHAT = msgspec.json.encode({"model": "mock-gpt", "messages": MESSAGES})
MSG = msgspec.json.encode({"model": "mock-claude", "max_tokens": 8, "messages": MESSAGES})


def joined(settings: Settings, opened: list[Core] | None = None) -> tuple[Gateway, ManagementApi]:
    """``server.load_app`` with the test secret."""

    async def open_core(s: Settings) -> Core:
        assert s.data_dir is not None
        core = await Core.from_settings(s)
        if opened is not None:
            opened.append(core)
        return core

    api = build_api(settings=settings)
    return create_app(settings, open_core=open_core, fallback=api), api


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway, _ = joined(settings_for(tmp_path / "data"))
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()


def test_load_app_mounts_the_management_api_and_the_console(tmp_path: Path) -> None:
    from agentrouter.console import Console, Site
    from agentrouter.server import load_app

    settings = settings_for(tmp_path / "data", AGENTROUTER_MONITOR_INTERVAL="7")
    gateway = load_app(settings)
    site = gateway._fallback
    assert isinstance(gateway, Gateway) and isinstance(site, Site)
    assert isinstance(site.api, ManagementApi) and isinstance(site.console, Console)
    # The one settings object, not read again.
    assert site.api.settings is settings and site.console.settings is settings


async def test_the_api_shares_the_gateways_core_and_lifespan(tmp_path: Path) -> None:
    opened: list[Core] = []
    gateway, api = joined(settings_for(tmp_path / "data", AGENTROUTER_MONITOR_INTERVAL="0.05"), opened)
    await gateway.startup()
    try:
        assert len(opened) == 1 and api.core is gateway.core  # one core per worker
        monitor = api.monitor
        assert monitor is not None and monitor.settings.monitor_interval == 0.05
        await until(lambda: monitor.runs > 0, "a run of the monitor")
        assert monitor.runs and monitor.leader
    finally:
        await gateway.shutdown()
    assert api.monitor is None and monitor._task is None  # stopped before the core closed
    assert gateway.core is None


async def test_a_failed_api_startup_fails_the_gateways_and_closes_the_core(tmp_path: Path) -> None:
    opened: list[Core] = []
    gateway, api = joined(settings_for(tmp_path / "data"), opened)

    async def broken(core: Core | None = None) -> None:
        raise RuntimeError("no monitor today")

    api.startup = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="no monitor today"):
        await gateway.startup()
    assert gateway.core is None and gateway.usage is None
    with pytest.raises(ValueError):  # closed: aiosqlite refuses
        await opened[0].store.schema_version()


async def test_api_routes_through_the_gateway(app: Gateway) -> None:
    assert (await call(app, "GET", "/api/openapi.json")).status == 200
    manage = await app.core.keys.create(name="admin", scope="manage")
    inference, _ = await new_key(app)
    listed = await call(app, "GET", "/api/v1/keys", headers={"authorization": f"Bearer {manage.key}"})
    assert listed.status == 200 and {k["name"] for k in listed.json()["data"]} == {"admin", None}
    refused = await call(app, "GET", "/api/v1/keys", headers={"x-api-key": inference})
    assert refused.status == 403 and refused.json()["error"]["type"] == "permission_error"
    # And the other way round: a management key cannot call /v1.
    assert (await call(app, "POST", "/v1/chat/completions", headers={"x-api-key": manage.key}, body=CHAT)).status == 403


@pytest.mark.parametrize(
    ("path", "shape", "hint"),
    [
        ("/", "api", "/v1"),
        ("/favicon.ico", "api", "/api"),
        ("/v1", "openai", None),
        ("/v1/nothing", "openai", None),
        ("/v1/messages/batches", "anthropic", None),
        ("/chat/completions", "openai", "'/v1/chat/completions'"),
        ("/models", "openai", "'/v1/models'"),
        ("/messages", "anthropic", "'/v1/messages'"),
        ("/v1/v1/messages", "anthropic", "'/v1/messages'"),
    ],
)
async def test_paths_outside_v1_and_api_are_404_in_a_fitting_dialect(
    app: Gateway, path: str, shape: str, hint: str | None
) -> None:
    """The API's error shape for what is no one's (here the API alone is mounted; with
    the console, ``server.load_app``, it takes / and the rest: tests/test_console.py); the
    dialect of the route a client meant when its base URL lacks or repeats /v1."""
    for method in ("GET", "POST"):
        r = await call(app, method, path)
        assert r.status == 404, (method, path, r.body)
        body: dict[str, Any] = r.json()
        if shape == "api":
            assert set(body) == {"error"} and body["error"]["type"] == "not_found"
        elif shape == "openai":
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert body["error"]["code"] == "unknown_url"
        else:
            assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
        if hint is not None:
            assert hint in body["error"]["message"], body


async def test_each_proxied_request_is_one_log_row(gw: Gateway) -> None:
    """Key totals and the request log agree; the model and the user agent are logged;
    a 401 has no key and no row; the key itself is never stored."""
    key, key_id = await new_key(gw, requests=3, interval=3600)
    ua = {"authorization": f"Bearer {key}", "user-agent": "OpenAI/Python 1.99 ünïcode"}
    xkey = {"x-api-key": key, "user-agent": "Anthropic/Python 0.60"}
    replies = [
        await call(gw, "POST", "/v1/chat/completions", headers=ua, body=CHAT),
        await call(gw, "POST", "/v1/messages", headers=xkey, body=MSG),
        await call(gw, "GET", "/v1/models", headers=xkey),
        await call(gw, "POST", "/v1/chat/completions", headers=ua, body=CHAT),  # over the limit: 429
        await call(gw, "POST", "/v1/chat/completions", headers={"x-api-key": "sk-ar-nope"}, body=CHAT),
        await call(gw, "POST", "/v1/chat/completions", body=CHAT),
    ]
    assert [r.status for r in replies] == [200, 200, 200, 429, 401, 401]
    assert gw.usage is not None and await gw.usage.flush()
    assert gw.core is not None
    usage = (await gw.core.keys.get(key_id)).usage
    analytics = gw.core.store
    assert usage.requests == await analytics.count_requests() == 4
    rows = [
        tuple(r)
        for r in await gw.core.store._db.execute_fetchall(
            "SELECT key_id, model, status, client_ip, user_agent, input_tokens, output_tokens, time, latency_ms"
            " FROM request_log ORDER BY id"
        )
    ]
    assert [r[:5] for r in rows] == [
        (key_id, "mock-gpt", 200, "127.0.0.1", "OpenAI/Python 1.99 ünïcode"),
        (key_id, "mock-claude", 200, "127.0.0.1", "Anthropic/Python 0.60"),
        (key_id, None, 200, "127.0.0.1", "Anthropic/Python 0.60"),
        (key_id, None, 429, "127.0.0.1", "OpenAI/Python 1.99 ünïcode"),
    ]
    assert sum(r[5] for r in rows) == usage.input_tokens > 0
    assert sum(r[6] for r in rows) == usage.output_tokens > 0
    assert all(abs(r[7] - time.time()) < 60 and r[8] >= 0 for r in rows)
    dump = "\n".join(map(str, await gw.core.store._db.execute_fetchall("SELECT * FROM request_log")))
    assert key not in dump and key[6:] not in dump
