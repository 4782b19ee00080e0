"""Usage figures in the API equal what end-to-end traffic produced.

The real server (``agentrouter serve``, two workers) proxies to the fake upstream on
loopback and serves the management API under ``/api`` on the same port. A key made
through the API is used for a known mix of requests (JSON and streamed, both
dialects, and refused ones); the API then reports exactly the requests sent and the
tokens of the fake's usage blocks, both in the key's totals and in the request log's
view (``/api/v1/keys/{id}/usage``), which the gateway's usage recorder writes in the
same transaction. A key deleted through the API is refused by the gateway on its
next request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrouter.datadir import DB_FILE
from agentrouter.store import SqliteStore, UsageDelta
from agentrouter.store.models import RequestRecord
from tests.api_fixtures import api_error, record
from tests.e2e.conftest import Gateway, start_gateway
from tests.upstream_fake import FakeUpstream, refused_port

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Hello!"}]


class Stack:
    def __init__(self, fake: FakeUpstream, gateway: Gateway, admin: str) -> None:
        self.fake = fake
        self.gateway = gateway
        self.admin = admin

    def client(self) -> httpx.Client:
        """The management API, mounted in the gateway."""
        return httpx.Client(base_url=self.gateway.url, timeout=30.0, headers={"authorization": f"Bearer {self.admin}"})

    def with_store(self, op: Any) -> Any:
        async def main() -> Any:
            store = await SqliteStore.open(self.gateway.data_dir / DB_FILE)
            try:
                return await op(store)
            finally:
                await store.close()

        return asyncio.run(main())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("e2e-usage")
    sock, port = refused_port()
    with FakeUpstream() as fake:
        gateway = start_gateway(tmp, fake, f"http://127.0.0.1:{port}")
        try:
            admin = gateway.cli_json("keys", "create", "--name", "admin", "--scope", "manage")["key"]
            yield Stack(fake, gateway, admin)
        finally:
            gateway.stop()
            sock.close()


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> dict[str, Any]:
    """A key made through the API, and a known mix of requests through the gateway."""
    with stack.client() as api:
        key = api.post("/api/v1/keys", json={"name": "e2e-usage", "rate_limit": {"requests": 1000}}).json()
    mark = stack.fake.mark()
    statuses: list[int] = []
    with httpx.Client(base_url=stack.gateway.url, timeout=30.0) as gw:
        bearer = {"authorization": f"Bearer {key['key']}"}
        x_api_key = {"x-api-key": key["key"], "anthropic-version": "2023-06-01"}
        for _i in range(5):
            statuses.append(
                gw.post(
                    "/v1/chat/completions", headers=bearer, json={"model": "gpt-4o", "messages": MESSAGES}
                ).status_code
            )
        for _i in range(3):
            with gw.stream(
                "POST",
                "/v1/chat/completions",
                headers=bearer,
                json={
                    "model": "gpt-4o",
                    "messages": MESSAGES,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ) as resp:
                resp.read()
                statuses.append(resp.status_code)
        for _i in range(2):
            statuses.append(
                gw.post(
                    "/v1/messages",
                    headers=x_api_key,
                    json={"model": "claude-3-5-sonnet", "max_tokens": 64, "messages": MESSAGES},
                ).status_code
            )
        with gw.stream(
            "POST",
            "/v1/messages",
            headers=x_api_key,
            json={"model": "claude-3-5-sonnet", "max_tokens": 64, "messages": MESSAGES, "stream": True},
        ) as resp:
            resp.read()
            statuses.append(resp.status_code)
        for _i in range(2):  # refused by the gateway, counted for the key
            statuses.append(
                gw.post(
                    "/v1/chat/completions", headers=bearer, json={"model": "no-such-model", "messages": MESSAGES}
                ).status_code
            )
    upstream = [r for r in stack.fake.since(mark) if r.usage is not None]
    return {
        "key": key,
        "statuses": statuses,
        "input_tokens": sum(r.usage[0] for r in upstream if r.usage),
        "output_tokens": sum(r.usage[1] for r in upstream if r.usage),
        "upstream_requests": len(stack.fake.since(mark)),
    }


def wait_for_requests(stack: Stack, key_id: str, n: int, timeout: float = 20.0) -> dict[str, Any]:
    with stack.client() as api:
        deadline = time.monotonic() + timeout
        while True:
            usage: dict[str, Any] = api.get(f"/api/v1/keys/{key_id}").json()["usage"]
            if usage["requests"] >= n or time.monotonic() > deadline:
                return usage
            time.sleep(0.2)


def test_key_totals_in_the_api_equal_the_traffic(stack: Stack, traffic: dict[str, Any]) -> None:
    statuses = traffic["statuses"]
    assert statuses.count(200) == 11 and statuses.count(404) == 2, statuses
    assert traffic["upstream_requests"] == 11
    assert traffic["input_tokens"] > 0 and traffic["output_tokens"] > 0
    usage = wait_for_requests(stack, traffic["key"]["id"], len(statuses))
    assert usage["requests"] == len(statuses) == 13
    assert (usage["successes"], usage["failures_4xx"], usage["failures_5xx"]) == (11, 2, 0)
    assert usage["input_tokens"] == traffic["input_tokens"]
    assert usage["output_tokens"] == traffic["output_tokens"]
    assert usage["last_used_at"] is not None and usage["last_client_ip"] == "127.0.0.1"
    with stack.client() as api:
        listed = api.get("/api/v1/keys", params={"limit": 200}).json()["data"]
    [row] = [k for k in listed if k["id"] == traffic["key"]["id"]]
    assert row["usage"] == usage and row["last_used_at"] == usage["last_used_at"]


def test_the_request_log_view_equals_the_traffic(stack: Stack, traffic: dict[str, Any]) -> None:
    key_id = traffic["key"]["id"]
    wait_for_requests(stack, key_id, len(traffic["statuses"]))
    with stack.client() as api:
        report = api.get(f"/api/v1/keys/{key_id}/usage", params={"since": "1h", "by": "minute"}).json()
        overall = api.get("/api/v1/usage", params={"since": "1h", "by": "hour"}).json()
    t = report["totals"]
    assert t["requests"] == len(traffic["statuses"]) == 13
    assert (t["successes"], t["failures_4xx"]) == (11, 2)
    assert t["input_tokens"] == traffic["input_tokens"] and t["output_tokens"] == traffic["output_tokens"]
    assert t["distinct_client_ips"] == 1
    assert {m["model"]: m["requests"] for m in report["models"]} == {
        "gpt-4o": 8,
        "claude-3-5-sonnet": 3,
        "no-such-model": 2,
    }
    assert t["latency_ms_p50"] is not None and 0 < t["latency_ms_p50"] <= t["latency_ms_p95"]
    assert sum(b["requests"] for b in report["series"]) == t["requests"]
    assert overall["totals"]["requests"] >= t["requests"]  # every key's traffic, this key's included


def test_a_key_deleted_through_the_api_is_refused_by_the_gateway(stack: Stack) -> None:
    with stack.client() as api:
        key = api.post("/api/v1/keys", json={"name": "short-lived"}).json()
        with httpx.Client(
            base_url=stack.gateway.url, timeout=30.0, headers={"authorization": f"Bearer {key['key']}"}
        ) as gw:
            assert gw.get("/v1/models").status_code == 200  # created through the API, works at once
            assert api.delete(f"/api/v1/keys/{key['id']}").status_code == 200
        for _ in range(4):  # fresh connections: every worker refuses it
            with httpx.Client(
                base_url=stack.gateway.url, timeout=30.0, headers={"authorization": f"Bearer {key['key']}"}
            ) as gw:
                assert gw.get("/v1/models").status_code == 401
        # And the API itself refuses the deleted key.
        with httpx.Client(base_url=stack.gateway.url, headers={"x-api-key": key["key"]}) as other:
            api_error(other.get("/api/v1/keys"), 401, "authentication_error")


def test_store_flush_path(stack: Stack) -> None:
    """What a usage-recorder flush writes (key totals and request-log rows for the same
    requests) is what both API views report."""
    with stack.client() as api:
        key = api.post("/api/v1/keys", json={"name": "flushed"}).json()
        now = time.time()
        statuses = [200] * 7 + [429, 400, 502]
        records: list[RequestRecord] = [
            record(key["id"], now - 30 + i, status=s, tin=11 * (i + 1), tout=3 * i, latency=5.0 + i)
            for i, s in enumerate(statuses)
        ]
        delta = UsageDelta(
            key_id=key["id"],
            requests=len(records),
            successes=sum(r.status < 400 for r in records),
            failures_4xx=sum(400 <= r.status < 500 for r in records),
            failures_5xx=sum(r.status >= 500 for r in records),
            input_tokens=sum(r.input_tokens for r in records),
            output_tokens=sum(r.output_tokens for r in records),
            latency_ms_total=sum(r.latency_ms for r in records),
            last_used_at=max(r.time for r in records),
            last_client_ip=records[-1].client_ip,
        )

        async def flush(store: Any) -> None:  # the two writes of one flush
            await store.add_usage([delta])
            await store.add_requests(records)

        stack.with_store(flush)
        totals = api.get(f"/api/v1/keys/{key['id']}").json()["usage"]
        report = api.get(f"/api/v1/keys/{key['id']}/usage", params={"since": "10m", "by": "minute"}).json()
    t = report["totals"]
    for name in ("requests", "successes", "failures_4xx", "failures_5xx", "input_tokens", "output_tokens"):
        assert t[name] == totals[name] == getattr(delta, name), name
    assert t["latency_ms_p50"] == 9.0 and t["latency_ms_p95"] == 14.0
