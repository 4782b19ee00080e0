"""``/metrics`` of a real ``agentrouter serve --workers 2``: the counts are the server's,
summed over its workers (each answers from its own counters and the other's snapshot
file), exact for N requests spread over both; refusals and the limiter counted; the
management key it needs; open with ``metrics_require_key = false``; a 404 in the
dialect with ``metrics_enabled = false``, and a restart clears the old snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Gateway, free_port, write_config
from tests.upstream_fake import FakeUpstream
from tests.waiting import until_sync

N = 40
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
Parsed = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Parsed:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: Parsed, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def total(parsed: Parsed, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in parsed.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream, down_url: str) -> Iterator[Gateway]:
    """A gateway of this module's own: its counts are only this module's requests."""
    tmp = tmp_path_factory.mktemp("metrics")
    data_dir = tmp / "data"
    data_dir.mkdir()
    config = write_config(tmp / "agentrouter.toml", fake.base_url, down_url, raw_url=fake.raw_base_url)
    gw = Gateway(data_dir, config, workers=2).start()
    try:
        yield gw
    finally:
        gw.stop()


def scrape(gw: Gateway, key: str | None) -> Parsed:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(gw.url + "/metrics", headers=headers, timeout=10.0)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def scrape_until(gw: Gateway, key: str, count: Callable[[Parsed], float], expected: float) -> Parsed:
    """The first scrape where ``count`` is ``expected``; no scrape may count more.

    A scrape sums the answering worker's live counters and the other's latest
    snapshot (at most about a second old): a count can lag, never run ahead."""
    seen: list[float] = []
    found: list[Parsed] = []

    def reached() -> bool:
        parsed = scrape(gw, key)
        seen.append(count(parsed))
        assert seen[-1] <= expected, f"counted more than {expected}: {seen}"
        if seen[-1] == expected:
            found.append(parsed)
        return bool(found)

    until_sync(reached, f"a count of {expected} in /metrics (seen {seen})", within=15.0, poll=0.1)
    return found[0]


def chat_count(parsed: Parsed, status_class: str = "2xx") -> float:
    labels = {"route": "/v1/chat/completions", "dialect": "openai", "status_class": status_class}
    return total(parsed, "agentrouter_requests_total", **labels)


def test_metrics_sum_the_workers_exactly(own: Gateway) -> None:
    key = own.create_key(name="metrics")["key"]
    manage_key = _manage_key(own)

    # N requests, each on a fresh connection, so that both workers answer some; the
    # request id's prefix is the worker's (req_<12 hex>).
    workers: set[str] = set()
    for _ in range(N):
        with httpx.Client(timeout=30.0) as http:
            r = http.post(own.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        workers.add(r.headers["x-request-id"][:16])
    assert len(workers) == 2, f"all {N} requests went to one worker: {workers}"

    # Every worker's count arrives within a snapshot interval, and it is exact.
    parsed = scrape_until(own, manage_key, lambda p: chat_count(p), N)
    assert value(parsed, "agentrouter_workers") == 2
    assert value(parsed, "agentrouter_upstream_latency_seconds_count", provider="fake-openai") == N
    assert value(parsed, "agentrouter_gateway_added_latency_seconds_count", provider="fake-openai") == N
    assert total(parsed, "agentrouter_tokens_total", provider="fake-openai", kind="input") > 0
    assert value(parsed, "agentrouter_active_streams") == 0


def test_refusals_and_the_limiter_are_counted(own: Gateway) -> None:
    """On /v1/messages, which nothing else in this module calls: the counts start at 0."""
    manage_key = _manage_key(own)
    limited = own.create_key(name="metrics-limited", limit=("1", "3600"))["key"]
    body = {"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": CHAT["messages"]}
    statuses = []
    for headers in ({}, {"x-api-key": "sk-ar-not-a-key"}, {"x-api-key": limited}) * 2:
        with httpx.Client(timeout=30.0) as http:
            r = http.post(own.url + "/v1/messages", json=body, headers={**headers, "anthropic-version": "2023-06-01"})
            statuses.append(r.status_code)
    assert statuses == [401, 401, 200, 401, 401, 429]

    def messages(parsed: Parsed, status_class: str) -> float:
        labels = {"route": "/v1/messages", "dialect": "anthropic", "status_class": status_class}
        return total(parsed, "agentrouter_requests_total", **labels)

    parsed = scrape_until(own, manage_key, lambda p: messages(p, "4xx") + messages(p, "2xx"), 6)
    assert messages(parsed, "4xx") == 5
    assert (
        value(
            parsed,
            "agentrouter_requests_total",
            route="/v1/messages",
            dialect="anthropic",
            status_class="4xx",
            provider="",
        )
        == 5
    )
    assert value(parsed, "agentrouter_limiter_refusals_total", route="/v1/messages") == 1
    assert value(parsed, "agentrouter_tokens_total", provider="fake-anthropic", kind="output") > 0


def test_metrics_need_a_management_key(own: Gateway) -> None:
    inference = own.create_key(name="metrics-inference")["key"]
    with httpx.Client(base_url=own.url, timeout=10.0) as http:
        missing = http.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = http.get("/metrics", headers={"authorization": f"Bearer {inference}"})
        assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "permission_error"
        assert http.get("/metrics", headers={"authorization": f"Bearer {_manage_key(own)}"}).status_code == 200


def test_open_metrics_then_disabled_after_a_restart(own: Gateway) -> None:
    """Last in this module: it restarts the module's gateway with other settings."""
    key = _manage_key(own)
    own.stop()
    snapshots = own.data_dir / "metrics"
    assert len(list(snapshots.glob("*.json"))) == 2  # the last snapshots, written at shutdown

    own.env["AGENTROUTER_METRICS_REQUIRE_KEY"] = "false"
    own.port = free_port()  # a new port: no wait for the old one's sockets
    own.start()
    try:
        parsed = parse(_get(own, "/metrics").text)  # no key
        assert value(parsed, "agentrouter_workers") == 2
        assert chat_count(parsed) == 0  # the old run's counts went with its workers
    finally:
        own.stop()

    own.env["AGENTROUTER_METRICS_ENABLED"] = "false"
    own.port = free_port()
    own.start()
    try:
        for headers in ({}, {"authorization": f"Bearer {key}"}):
            r = httpx.get(own.url + "/metrics", headers=headers, timeout=10.0)
            assert r.status_code == 404
            error = r.json()["error"]
            assert error["code"] == "unknown_url" and "metrics_enabled" in error["message"]
        assert list(snapshots.glob("*.json")) == []  # the previous run's, cleared at start
    finally:
        own.stop()


def _get(gw: Gateway, path: str) -> Any:
    r = httpx.get(gw.url + path, timeout=10.0)
    assert r.status_code == 200, r.text
    return r


_MANAGE: dict[str, str] = {}


def _manage_key(gw: Gateway) -> str:
    """A management key of ``gw`` (made once)."""
    if str(gw.data_dir) not in _MANAGE:
        created = gw.cli_json("keys", "create", "--name", "metrics-scrape", "--scope", "manage")
        _MANAGE[str(gw.data_dir)] = created["key"]
    return _MANAGE[str(gw.data_dir)]
