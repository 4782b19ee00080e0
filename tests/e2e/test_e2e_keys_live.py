"""Key changes made with the CLI while the gateway serves, and the usage it records."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, async_client
from tests.upstream_fake import FakeUpstream

MESSAGES = [{"role": "user", "content": "Hello!"}]

# The /v1 edge and its usage records on both stores (tests/conftest.py: store_backend).
pytestmark = pytest.mark.store_backends()


async def _burst(url: str, key: str, n: int) -> list[int]:
    """``n`` concurrent requests, each on a fresh connection, so every worker takes some."""

    async def one(i: int) -> int:
        async with async_client() as client:
            if i % 2:
                resp = await client.post(
                    url + "/v1/chat/completions",
                    json={"model": "gpt-4o", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {key}"},
                )
            else:
                resp = await client.post(
                    url + "/v1/messages",
                    json={"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": MESSAGES},
                    headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                )
            return resp.status_code

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_delete_while_serving_refuses_next_request_on_every_worker(gateway: Gateway) -> None:
    created = gateway.create_key(name="delete-live")
    # Warm the key on every worker first, so each has it in its table.
    assert await _burst(gateway.url, created["key"], 12) == [200] * 12
    gateway.cli("keys", "delete", created["id"], "--yes")
    assert await _burst(gateway.url, created["key"], 12) == [401] * 12
    # Keep-alive connections opened before the deletion are refused too.
    async with async_client() as client:
        for _ in range(4):
            resp = await client.post(
                gateway.url + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {created['key']}"},
            )
            assert resp.status_code == 401


async def test_key_created_while_serving_works_on_first_request(gateway: Gateway) -> None:
    # The gateway is already up and serving other keys.
    other = gateway.create_key(name="busy")
    assert await _burst(gateway.url, other["key"], 4) == [200] * 4
    created = gateway.create_key(name="create-live")
    assert await _burst(gateway.url, created["key"], 12) == [200] * 12


async def test_key_updated_while_serving_applies_on_next_request(gateway: Gateway) -> None:
    """A new limit and a new expiry set with ``keys update`` hold on every worker at once."""
    created = gateway.create_key(name="update-live")
    assert await _burst(gateway.url, created["key"], 12) == [200] * 12
    gateway.cli("keys", "update", created["id"], "--requests", "3", "--interval", "1h")
    statuses = await _burst(gateway.url, created["key"], 12)
    assert sorted(statuses) == [200] * 3 + [429] * 9
    gateway.cli("keys", "update", created["id"], "--no-limit")
    assert await _burst(gateway.url, created["key"], 6) == [200] * 6
    gateway.cli("keys", "update", created["id"], "--expires-in", "1ms")
    assert await _burst(gateway.url, created["key"], 12) == [401] * 12


def test_usage_totals_in_keys_list(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    """Requests, outcomes and tokens (JSON and streamed, both dialects) reach ``keys list --json``."""
    created = gateway.create_key(name="usage", metadata={"team": "e2e"})
    key = created["key"]
    fake.on("gpt-usage-boom", status=503, body=b'{"error": {"message": "overloaded", "type": "server_error"}}')
    mark = fake.mark()
    oc = clients("openai", key)
    ac = clients("anthropic", key)
    oc.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    for _ in oc.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        pass
    oc.embeddings.create(model="text-embedding-3-small", input="tokens please")
    oc.responses.create(model="gpt-4o", input="Hello!")
    with oc.responses.stream(model="gpt-4o", input="Hello!") as stream:
        stream.get_final_response()
    ac.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=8, messages=MESSAGES)
    with ac.messages.stream(model="claude-3-5-sonnet-20241022", max_tokens=8, messages=MESSAGES) as stream:
        stream.get_final_message()
    successes = 7
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        bad = http.post("/v1/chat/completions", content=b"{", headers={"Authorization": f"Bearer {key}"})
        boom = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-usage-boom", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert (bad.status_code, boom.status_code) == (400, 503)
    upstream = [r for r in fake.since(mark) if r.usage is not None]
    assert len(upstream) == successes
    want_in = sum(r.usage[0] for r in upstream)
    want_out = sum(r.usage[1] for r in upstream)

    gateway.wait_usage(created["id"], successes + 2)
    rows = gateway.cli_json("keys", "list")
    row = next(r for r in rows if r["id"] == created["id"])
    usage = row["usage"]
    assert usage["requests"] == successes + 2
    assert usage["successes"] == successes
    assert usage["failures_4xx"] == 1
    assert usage["failures_5xx"] == 1
    assert (usage["input_tokens"], usage["output_tokens"]) == (want_in, want_out)
    assert usage["last_used_at"] is not None
    assert usage["latency_ms_total"] > 0
    assert usage["last_client_ip"] == "127.0.0.1"
    assert row["metadata"] == {"team": "e2e"}
    assert row["last_used_at"] == usage["last_used_at"]
    # Nothing about the key itself is listed beyond its display prefix.
    assert key not in str(rows)
    assert row["prefix"].startswith(key[:12])
