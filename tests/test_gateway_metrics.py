"""``/metrics`` in process: the recorder's slots, the snapshot files and their merge, the
exposition (parsed back with ``prometheus_client``'s own parser), and the endpoint on
the app: counted answers (refusals, the limiter, the proxy's latencies, time to the
first streamed byte, active streams), the key it needs, ``metrics_enabled = false``.

Aggregation over real Granian workers: ``tests/e2e/test_e2e_metrics.py``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentrouter.api import build_api
from agentrouter.config import ConfigError, Settings
from agentrouter.core import Core
from agentrouter.gateway.app import Gateway, create_app
from agentrouter.gateway.metrics import Merged, Publisher, Recorder, Snapshot, clear_stale, merge, read_peers, render
from agentrouter.gateway.metrics.recorder import ADDED_BUCKETS, UPSTREAM_BUCKETS
from agentrouter.gateway.metrics.snapshot import process_start
from tests.gateway_fixtures import (
    FakeUpstream,
    GatedStream,
    call,
    json_handler,
    new_key,
    settings_for,
    start_gateway,
    stored_usage,
)
from tests.waiting import until, until_async

CHAT = {"id": "c", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
ROUTES = ("/v1/chat/completions", "/v1/messages")


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus_client: (name, sorted labels) → value."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def total(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    return sum(v for (n, ls), v in parsed.items() if n == name and set(labels.items()) <= set(ls))


# ------------------------------------------------------------------ the recorder


def test_recorder_slots_come_back_as_labels() -> None:
    r = Recorder(ROUTES, ["oai", "ant"])
    r.answer(0, 0, 200, 1, 10, 5)
    r.answer(0, 0, 201, 1, 1, 0)
    r.answer(1, 1, 429, 0, 0, 0)
    r.answer(1, 1, 503, 2, 0, 0)
    r.answer(1, 1, 999, 2, 0, 0)  # no such class: counted as 5xx, never another slot
    r.refused(1)
    snap = r.snapshot(1, 2, 3)
    assert sorted(snap.counters["requests"]) == [
        (["/v1/chat/completions", "openai", "2xx", "oai"], 2),
        (["/v1/messages", "anthropic", "4xx", ""], 1),
        (["/v1/messages", "anthropic", "5xx", "ant"], 2),
    ]
    assert sorted(snap.counters["tokens"]) == [(["oai", "input"], 11), (["oai", "output"], 5)]
    assert snap.counters["limiter_refusals"] == [(["/v1/messages"], 1)]
    assert snap.gauges["active_streams"] == [([], 0)]


def test_histogram_buckets_are_at_most_their_bound() -> None:
    r = Recorder(ROUTES, ["oai"])
    r.upstream(1, UPSTREAM_BUCKETS[0])  # exactly the first bound: in it (le)
    r.upstream(1, UPSTREAM_BUCKETS[0] * 1.01)
    r.upstream(1, 10_000.0)  # past every bound: +Inf only
    r.added(1, 0.0)
    ((labels, counts, total_),) = r.snapshot(1, 2, 3).histograms["upstream_latency_seconds"]
    assert labels == ["oai"]
    assert len(counts) == len(UPSTREAM_BUCKETS) + 1
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1 and sum(counts) == 3
    assert total_ == pytest.approx(UPSTREAM_BUCKETS[0] * 2.01 + 10_000.0)
    ((_, added, _),) = r.snapshot(1, 2, 3).histograms["gateway_added_latency_seconds"]
    assert len(added) == len(ADDED_BUCKETS) + 1 and added[0] == 1


def test_merge_sums_workers_and_skips_unsummable_histograms() -> None:
    a, b = Recorder(ROUTES, ["oai"]), Recorder(ROUTES, ["oai"])
    for _ in range(3):
        a.answer(0, 0, 200, 1, 2, 1)
    b.answer(0, 0, 200, 1, 2, 1)
    a.first_byte(1, 0.2)
    b.first_byte(1, 0.3)
    b.active_streams = 2
    odd = Snapshot(pid=9, server=2, started=0, histograms={"time_to_first_byte_seconds": [(["oai"], [1, 2], 0.5)]})
    merged = merge([a.snapshot(1, 2, 0), b.snapshot(2, 2, 0), odd])
    assert merged.workers == 3
    assert merged.counters["requests"] == {("/v1/chat/completions", "openai", "2xx", "oai"): 4}
    assert merged.counters["tokens"] == {("oai", "input"): 8, ("oai", "output"): 4}
    assert merged.gauges["active_streams"] == {(): 2}
    counts, total_ = merged.histograms["time_to_first_byte_seconds"][("oai",)]
    assert sum(counts) == 2 and total_ == pytest.approx(0.5)


def test_the_exposition_parses_with_prometheus_client() -> None:
    r = Recorder(ROUTES, ["oai"])
    r.answer(0, 0, 200, 1, 7, 9)
    r.upstream(1, 0.03)
    r.upstream(1, 0.2)
    text = render(merge([r.snapshot(1, 2, 0)]))
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["agentrouter_requests"].type == "counter"
    assert families["agentrouter_upstream_latency_seconds"].type == "histogram"
    assert families["agentrouter_active_streams"].type == "gauge"
    parsed = samples(text)
    labels = {"route": "/v1/chat/completions", "dialect": "openai", "status_class": "2xx", "provider": "oai"}
    assert value(parsed, "agentrouter_requests_total", **labels) == 1
    assert value(parsed, "agentrouter_tokens_total", provider="oai", kind="output") == 9
    assert value(parsed, "agentrouter_upstream_latency_seconds_bucket", provider="oai", le="0.05") == 1
    assert value(parsed, "agentrouter_upstream_latency_seconds_bucket", provider="oai", le="+Inf") == 2
    assert value(parsed, "agentrouter_upstream_latency_seconds_count", provider="oai") == 2
    assert value(parsed, "agentrouter_workers") == 1
    # Every family is there before it has a series, and nothing else is.
    assert set(families) == {"agentrouter_" + n for n in _family_names()}
    assert render(Merged()).decode().count("# TYPE ") == len(families)


def _family_names() -> list[str]:
    from agentrouter.gateway.metrics import FAMILIES

    return list(FAMILIES)


# ------------------------------------------------------------------ snapshot files


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_snapshot_files_of_live_workers_of_the_same_server_only(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    r = Recorder(ROUTES, ["oai"])
    r.answer(0, 0, 200, 1, 0, 0)
    mine = Publisher(lambda: r.snapshot(os.getpid(), 4242, process_start(os.getpid()) or 0), directory)
    mine.start()
    try:
        assert mine.path.exists()
        parent = os.getppid()
        # Peers: this process (seen as another worker from pid 1's point of view), one of
        # another server, a dead one, and a live pid whose start time is not the writer's.
        me = os.getpid()
        start = process_start(me) or 0

        def put(pid: int, server: int, started: int) -> None:
            snap = Snapshot(pid=pid, server=server, started=started, gauges={"active_streams": [([], 1.0)]})
            (directory / f"{pid}.json").write_bytes(msgspec.json.encode(snap))

        put(me, parent, start)
        assert [s.pid for s in read_peers(directory, 1, parent)] == [me]
        assert read_peers(directory, me, parent) == []  # its own file is never a peer
        assert read_peers(directory, 1, parent + 1) == []  # another server's
        if start:
            put(me, parent, start + 1)  # the pid was reused by another process
            assert read_peers(directory, 1, parent) == []
        dead = _dead_pid()
        put(dead, parent, 0)
        (directory / "junk.json").write_bytes(b"{not json")
        (directory / "7.json.tmp").write_bytes(b"")
        assert dead not in [s.pid for s in read_peers(directory, 1, parent)]
        put(me, parent, start)
        assert clear_stale(directory) == 3  # the dead one, the junk, the leftover .tmp
        assert sorted(p.name for p in directory.iterdir()) == [f"{me}.json"]
        r.answer(0, 0, 200, 1, 0, 0)
        mine.write()
        written = msgspec.json.decode((directory / f"{me}.json").read_bytes(), type=Snapshot)
        assert written.server == 4242 and written.counters["requests"][0][1] == 2
    finally:
        await mine.close()


# ------------------------------------------------------------------ the endpoint


def toml(base_url: str, extra: str = "") -> str:
    return f"""
[server]
{extra}

[[providers]]
name = "oai"
type = "openai"
base_url = "{base_url}"
api_key = "sk-up"
models = ["gpt-*"]

[[providers]]
name = "mock"
type = "mock"
"""


async def start_with_api(settings: Settings) -> Gateway:
    """The app as ``serve`` builds it: the management API mounted."""

    async def open_core(s: Settings) -> Core:
        return await Core.from_settings(s)

    gw = create_app(settings, open_core=open_core, fallback=build_api(settings=settings, run_monitor=False))
    await gw.startup()
    return gw


@pytest.fixture
async def app(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    upstream.routes["/v1/chat/completions"] = json_handler(CHAT)
    gw = await start_with_api(settings_for(tmp_path / "data", toml(upstream.base_url)))
    try:
        yield gw
    finally:
        await gw.shutdown()


def oa(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "content-type": "application/json"}


async def scrape(app: Gateway, key: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await call(app, "GET", "/metrics", headers=oa(key) if key else {})
    assert r.status == 200, r.body
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.body)


async def test_metrics_need_a_management_key_refused_like_the_api(app: Gateway) -> None:
    inference, _ = await new_key(app)
    manage, manage_id = await new_key(app, scope="manage")
    missing = await call(app, "GET", "/metrics")
    assert missing.status == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    api = await call(app, "GET", "/api/v1/keys")
    assert (api.status, api.json()) == (missing.status, missing.json())  # the same refusal as /api
    wrong = await call(app, "GET", "/metrics", headers=oa(inference))
    assert wrong.status == 403 and wrong.json()["error"]["type"] == "permission_error"
    assert "scope 'manage'" in wrong.json()["error"]["message"]
    ambiguous = await call(
        app, "GET", "/metrics", headers={"x-api-key": manage, "authorization": f"Bearer {inference}"}
    )
    assert ambiguous.status == 401 and "Ambiguous" in ambiguous.json()["error"]["message"]
    parsed = await scrape(app, manage)
    assert value(parsed, "agentrouter_workers") == 1
    head = await call(app, "HEAD", "/metrics", headers=oa(manage))
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 0
    post = await call(app, "POST", "/metrics", headers=oa(manage))
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
    # Never counted as usage, nor as a /v1 request.
    assert (await stored_usage(app, manage_id)).requests == 0
    assert total(await scrape(app, manage), "agentrouter_requests_total") == 0


async def test_answers_refusals_and_the_limiter_are_counted(app: Gateway, upstream: FakeUpstream) -> None:
    key, _ = await new_key(app, requests=2, interval=60)
    manage, _ = await new_key(app, scope="manage")
    chat = msgspec.json.encode({"model": "gpt-4o", "messages": []})
    for _ in range(3):  # 2 proxied, the third refused by the limiter
        await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=chat)
    await call(app, "POST", "/v1/chat/completions", body=chat)  # no key: 401
    await call(app, "POST", "/v1/messages", headers={"x-api-key": "sk-ar-nope"}, body=b"{}")  # malformed: 401
    await call(app, "GET", "/v1/nowhere")  # 404, no route
    parsed = await scrape(app, manage)
    chat_route = {"route": "/v1/chat/completions", "dialect": "openai"}
    assert value(parsed, "agentrouter_requests_total", **chat_route, status_class="2xx", provider="oai") == 2
    assert value(parsed, "agentrouter_requests_total", **chat_route, status_class="4xx", provider="") == 2
    messages = {"route": "/v1/messages", "dialect": "anthropic", "status_class": "4xx", "provider": ""}
    assert value(parsed, "agentrouter_requests_total", **messages) == 1
    other = {"route": "other", "dialect": "openai", "status_class": "4xx", "provider": ""}
    assert value(parsed, "agentrouter_requests_total", **other) == 1
    assert total(parsed, "agentrouter_requests_total") == 6
    assert value(parsed, "agentrouter_limiter_refusals_total", route="/v1/chat/completions") == 1
    assert value(parsed, "agentrouter_tokens_total", provider="oai", kind="input") == 6
    assert value(parsed, "agentrouter_tokens_total", provider="oai", kind="output") == 8
    assert value(parsed, "agentrouter_upstream_latency_seconds_count", provider="oai") == 2
    assert value(parsed, "agentrouter_gateway_added_latency_seconds_count", provider="oai") == 2
    assert 0 < value(parsed, "agentrouter_gateway_added_latency_seconds_sum", provider="oai") < 1
    assert value(parsed, "agentrouter_usage_pending_requests") >= 0


async def test_the_gateways_own_500_is_counted(app: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = await new_key(app)
    manage, _ = await new_key(app, scope="manage")

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("agentrouter.gateway.app.mock.handle", broken)
    r = await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=b'{"model": "mock-gpt"}')
    assert r.status == 500
    parsed = await scrape(app, manage)
    labels = {"route": "/v1/chat/completions", "dialect": "openai", "status_class": "5xx", "provider": "mock"}
    assert value(parsed, "agentrouter_requests_total", **labels) == 1


async def test_streams_time_to_first_byte_and_active_streams(app: Gateway, upstream: FakeUpstream) -> None:
    key, _ = await new_key(app)
    manage, _ = await new_key(app, scope="manage")
    gated = GatedStream([b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"])
    upstream.routes["/v1/chat/completions"] = gated.handler
    body = msgspec.json.encode({"model": "gpt-4o", "stream": True, "messages": []})
    task = asyncio.ensure_future(call(app, "POST", "/v1/chat/completions", headers=oa(key), body=body))
    gated.release()
    await until(lambda: gated.written == 1, "the first event")
    parsed: dict[Any, float] = {}

    async def streaming() -> bool:
        nonlocal parsed
        parsed = await scrape(app, manage)
        return value(parsed, "agentrouter_time_to_first_byte_seconds_count", provider="oai") == 1

    await until_async(streaming, "the first byte counted")
    assert value(parsed, "agentrouter_active_streams") == 1
    gated.release()
    reply = await task
    assert reply.status == 200
    parsed = await scrape(app, manage)
    assert value(parsed, "agentrouter_active_streams") == 0
    assert value(parsed, "agentrouter_upstream_latency_seconds_count", provider="oai") == 1
    # The mock's stream too (no upstream: all of its time is the gateway's).
    mock_body = msgspec.json.encode(
        {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert (await call(app, "POST", "/v1/chat/completions", headers=oa(key), body=mock_body)).status == 200
    parsed = await scrape(app, manage)
    assert value(parsed, "agentrouter_time_to_first_byte_seconds_count", provider="mock") == 1
    assert value(parsed, "agentrouter_gateway_added_latency_seconds_count", provider="mock") == 1
    assert value(parsed, "agentrouter_upstream_latency_seconds_count", provider="mock") == 0
    assert value(parsed, "agentrouter_active_streams") == 0


async def test_metrics_without_a_key_when_so_configured(tmp_path: Path, upstream: FakeUpstream) -> None:
    gw = await start_gateway(settings_for(tmp_path / "data", toml(upstream.base_url, "metrics_require_key = false")))
    try:
        r = await call(gw, "GET", "/metrics")
        assert r.status == 200
        assert value(samples(r.body), "agentrouter_workers") == 1
    finally:
        await gw.shutdown()


async def test_metrics_disabled_is_a_404_in_the_dialect(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = settings_for(tmp_path / "data", toml(upstream.base_url), AGENTROUTER_METRICS_ENABLED="false")
    assert settings.metrics_enabled is False
    gw = await start_with_api(settings)  # answered by the gateway, not the mounted API
    try:
        r = await call(gw, "GET", "/metrics")
        assert r.status == 404
        error = r.json()["error"]
        assert error["code"] == "unknown_url" and "metrics_enabled" in error["message"]
        assert not (tmp_path / "data" / "metrics").exists()  # nothing written either
    finally:
        await gw.shutdown()


async def test_the_last_snapshot_is_written_at_shutdown(tmp_path: Path, upstream: FakeUpstream) -> None:
    gw = await start_gateway(settings_for(tmp_path / "data", toml(upstream.base_url)))
    key, _ = await new_key(gw)
    await call(gw, "POST", "/v1/chat/completions", headers=oa(key), body=b'{"model": "mock-gpt"}')
    await gw.shutdown()
    snap = msgspec.json.decode((tmp_path / "data" / "metrics" / f"{os.getpid()}.json").read_bytes(), type=Snapshot)
    assert sum(n for _, n in snap.counters["requests"]) == 1


def test_metrics_settings(tmp_path: Path) -> None:
    defaults = settings_for(tmp_path / "data")
    assert defaults.metrics_enabled is True and defaults.metrics_require_key is True
    from_file = settings_for(tmp_path / "data", "[server]\nmetrics_require_key = false\n")
    assert from_file.metrics_require_key is False
    with pytest.raises(ConfigError, match=r"server\.metrics_enabled.*AGENTROUTER_METRICS_ENABLED"):
        settings_for(tmp_path / "data", AGENTROUTER_METRICS_ENABLED="maybe")
