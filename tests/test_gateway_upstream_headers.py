"""What goes upstream besides the body: the gateway's own x-request-id (the caller's
is kept in the request log, not forwarded), and the provider's configured OpenAI
organization and project (a caller's own never reach the upstream)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentrouter.config import ConfigError, load_settings
from agentrouter.gateway.app import Gateway
from tests.gateway_fixtures import FakeUpstream, call, json_handler, new_key, settings_for, start_gateway, stored_usage

ANSWER = {"id": "c1", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


def config(base_url: str) -> str:
    return f"""
[[providers]]
name = "billed"
type = "openai"
base_url = "{base_url}"
api_key = "sk-up"
models = ["gpt-billed"]
organization = "org-gateway"
project = "proj_gateway"

[[providers]]
name = "plain"
type = "openai"
base_url = "{base_url}"
api_key = "sk-up"
models = ["gpt-*"]

[[providers]]
name = "ant"
type = "anthropic"
base_url = "{base_url}"
api_key = "sk-ant"
models = ["claude-*"]
"""


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = await FakeUpstream().start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def gw(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    upstream.routes["/v1/chat/completions"] = json_handler(ANSWER)
    upstream.routes["/v1/messages"] = json_handler({"id": "m", "type": "message", "content": []})
    app = await start_gateway(settings_for(tmp_path / "data", config(upstream.base_url)))
    try:
        yield app
    finally:
        await app.shutdown()


async def log_rows(gw: Gateway, key_id: str) -> list[tuple[int, str | None]]:
    await stored_usage(gw, key_id)  # written, through the usage writer process
    with sqlite3.connect(gw.core.store.path) as db:
        return list(
            db.execute("SELECT status, caller_request_id FROM request_log WHERE key_id = ? ORDER BY id", (key_id,))
        )


async def test_the_gateways_request_id_goes_upstream_the_callers_to_the_log(
    gw: Gateway, upstream: FakeUpstream
) -> None:
    key, key_id = await new_key(gw)
    caller_ids = ["caller-1", "x" * 1024, "y" * 1025, None]
    for caller_id in caller_ids:
        headers = [("authorization", f"Bearer {key}")] + ([("x-request-id", caller_id)] if caller_id else [])
        reply = await call(gw, "POST", "/v1/chat/completions", body=b'{"model":"gpt-4o"}', headers=headers)
        assert reply.status == 200
        sent = upstream.seen[-1].headers
        assert [v for k, v in sent.items() if k.lower() == "x-request-id"] == [reply.headers["x-request-id"]]
        assert reply.headers["x-request-id"].startswith("req_")
    # Anthropic routes too; and a request the gateway refuses keeps the caller's id as well.
    reply = await call(
        gw, "POST", "/v1/messages", body=b'{"model":"claude-3"}', headers={"x-api-key": key, "x-request-id": "c-2"}
    )
    assert upstream.seen[-1].lower_headers["x-request-id"] == reply.headers["request-id"]
    reply = await call(
        gw, "POST", "/v1/chat/completions", body=b'{"model":"nope"}', headers={"x-api-key": key, "x-request-id": "c-3"}
    )
    assert reply.status == 404
    assert await log_rows(gw, key_id) == [
        (200, "caller-1"),
        (200, "x" * 1024),
        (200, None),  # over 1 KB: not kept, and no error
        (200, None),
        (200, "c-2"),
        (404, "c-3"),
    ]


async def test_callers_cannot_choose_the_organization_or_project_billed(gw: Gateway, upstream: FakeUpstream) -> None:
    key, _ = await new_key(gw)
    chosen = {"OpenAI-Organization": "org-attacker", "OpenAI-Project": "proj_attacker"}
    for model, expected in [("gpt-billed", ("org-gateway", "proj_gateway")), ("gpt-4o", (None, None))]:
        body = b'{"model":"%s"}' % model.encode()
        reply = await call(
            gw, "POST", "/v1/chat/completions", body=body, headers={"authorization": f"Bearer {key}", **chosen}
        )
        assert reply.status == 200
        h = upstream.seen[-1].lower_headers
        assert (h.get("openai-organization"), h.get("openai-project")) == expected
        assert "org-attacker" not in repr(upstream.seen[-1].headers)


def test_organization_and_project_settings(tmp_path: Path) -> None:
    def load(extra: str, **env: str) -> object:
        path = tmp_path / "c.toml"
        path.write_text(
            f'[[providers]]\nname = "p"\ntype = "{env.pop("TYPE", "openai")}"\nbase_url = "https://u.test/v1"\n'
            f'api_key = "k"\nmodels = ["m"]\n{extra}'
        )
        return load_settings(path, env=env)

    settings = load('organization = "org-1"\nproject = "proj_1"\n')
    assert (settings.providers[0].organization, settings.providers[0].project) == ("org-1", "proj_1")  # type: ignore[attr-defined]
    settings = load("", AGENTROUTER_PROVIDERS__P__ORGANIZATION="org-env")
    assert settings.providers[0].organization == "org-env"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"providers\[0\] \('p'\)\.organization: only a provider of type 'openai'"):
        load('organization = "org-1"\n', TYPE="anthropic")
    for bad in ('"org 1"', '"org-1\\r\\nX-Evil: 1"', '""', '"org-é"'):
        with pytest.raises(ConfigError, match=r"\.project: expected an id of visible ASCII"):
            load(f"project = {bad}\n")
