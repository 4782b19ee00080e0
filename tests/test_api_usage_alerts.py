"""Usage and alert routes over the real server: figures equal what the request log
holds, every time form and bucket, bad ranges; alerts listed, filtered, paged,
acknowledged — and raised by the monitor task the server's lifespan started."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.api_fixtures import ApiServer, record
from tests.api_fixtures import api_error as error
from tests.waiting import until_sync

pytestmark = [pytest.mark.slow, pytest.mark.store_backends()]

DAY = 86400.0


@pytest.fixture(scope="module")
def traffic(api_server: ApiServer, admin: dict[str, Any]) -> dict[str, Any]:
    """Two keys with known request logs: 'a' 30 requests over 3 hours two days ago
    (ten per hour, one 429 and one 502 each hour), 'b' 4 requests in the last minutes."""
    a = api_server.create_key("--name", "usage-a")
    b = api_server.create_key("--name", "usage-b")
    now = time.time()
    base = (now - 2 * DAY) // 3600 * 3600
    records = []
    for hour in range(3):
        for i in range(10):
            status = 429 if i == 8 else 502 if i == 9 else 200
            records.append(
                record(
                    a["id"],
                    base + hour * 3600 + i * 60,
                    status=status,
                    latency=float(10 * (i + 1)),
                    model="gpt-4o" if i % 2 == 0 else "claude-3-5-sonnet",
                    ip=f"10.0.0.{i % 3}",
                )
            )
    records += [record(b["id"], now - 300 + i, tin=100, tout=50, ip="10.1.1.1", model=None) for i in range(4)]
    api_server.add_requests(records)
    return {"a": a, "b": b, "base": base, "now": now}


def test_key_usage_totals_series_and_models(http: httpx.Client, traffic: dict[str, Any]) -> None:
    a, base = traffic["a"], traffic["base"]
    report = http.get(f"/api/v1/keys/{a['id']}/usage", params={"since": "3d", "by": "hour"}).json()
    assert report["key_id"] == a["id"] and report["bucket"] == "hour" and report["bucket_seconds"] == 3600
    t = report["totals"]
    assert (t["requests"], t["successes"], t["failures_4xx"], t["failures_5xx"]) == (30, 24, 3, 3)
    assert (t["input_tokens"], t["output_tokens"], t["distinct_client_ips"]) == (300, 120, 3)
    assert (t["latency_ms_p50"], t["latency_ms_p95"]) == (50.0, 100.0)
    used = [b for b in report["series"] if b["requests"]]
    assert [b["start"] for b in used] == [base, base + 3600, base + 7200]
    assert all(b["requests"] == 10 and b["failures_4xx"] == 1 and b["failures_5xx"] == 1 for b in used)
    assert len(report["series"]) in (72, 73)  # every hour of the range, empty ones included
    models = {m["model"]: m["requests"] for m in report["models"]}
    assert models == {"gpt-4o": 15, "claude-3-5-sonnet": 15}


def test_time_forms_and_buckets(http: httpx.Client, traffic: dict[str, Any]) -> None:
    a, base = traffic["a"], traffic["base"]
    url = f"/api/v1/keys/{a['id']}/usage"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base))
    until_iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(base + 3600))
    one_hour = http.get(url, params={"since": iso, "until": until_iso, "by": "minute"}).json()
    assert one_hour["since"] == base and one_hour["until"] == base + 3600
    assert one_hour["totals"]["requests"] == 10 and len(one_hour["series"]) == 60
    assert sum(b["requests"] for b in one_hour["series"]) == 10
    unix = http.get(url, params={"since": str(int(base)), "until": str(int(base + 7200))}).json()
    assert unix["totals"]["requests"] == 20
    date = time.strftime("%Y-%m-%d", time.gmtime(base))
    days = http.get(url, params={"since": date, "by": "day", "until": str(int(base + 3 * 3600))}).json()
    assert days["totals"]["requests"] == 30 and sum(b["requests"] for b in days["series"]) == 30
    default = http.get(url).json()  # the last 24 hours, by hour
    assert default["bucket"] == "hour" and default["totals"]["requests"] == 0


def test_overall_usage(http: httpx.Client, traffic: dict[str, Any]) -> None:
    everyone = http.get("/api/v1/usage", params={"since": "3d"}).json()
    assert everyone["key_id"] is None and everyone["totals"]["requests"] >= 34
    only_b = http.get("/api/v1/usage", params={"since": "1h", "key_id": traffic["b"]["id"], "by": "minute"}).json()
    t = only_b["totals"]
    assert (t["requests"], t["input_tokens"], t["output_tokens"], t["distinct_client_ips"]) == (4, 400, 200, 1)
    assert only_b["models"] == [{**only_b["models"][0], "model": None, "requests": 4}]
    error(http.get("/api/v1/usage", params={"key_id": "key_0000000000000000"}), 404, "not_found")


def test_deleted_keys_keep_their_history(api_server: ApiServer, http: httpx.Client) -> None:
    gone = http.post("/api/v1/keys", json={"name": "history"}).json()
    api_server.add_requests([record(gone["id"], time.time() - 60)])
    http.delete(f"/api/v1/keys/{gone['id']}")
    report = http.get(f"/api/v1/keys/{gone['id']}/usage", params={"since": "1h"})
    assert report.status_code == 200 and report.json()["totals"]["requests"] == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2024-13-01"}, "since"),
        ({"since": "2024-02-30T00:00:00Z"}, "since"),
        ({"until": "soon"}, "until"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"since": "30d", "by": "minute"}, "by"),
        ({"by": "week"}, "by"),
    ],
)
def test_bad_ranges_name_the_parameter(
    http: httpx.Client, traffic: dict[str, Any], params: dict[str, str], field: str
) -> None:
    error(http.get(f"/api/v1/keys/{traffic['a']['id']}/usage", params=params), 422, "invalid_request", field)
    error(http.get("/api/v1/usage", params=params), 422, "invalid_request", field)


# --------------------------------------------------------------------------- alerts


@pytest.fixture(scope="module")
def alerts(api_server: ApiServer, traffic: dict[str, Any]) -> list[dict[str, Any]]:
    key_id = traffic["a"]["id"]
    now = time.time()

    async def seed(store: Any) -> list[str]:
        a = store
        out = []
        for i, kind in enumerate(["volume_spike", "failure_rate", "unusual_hour", "new_ip", "new_ip"]):
            row = await a.record_alert(
                key_id=key_id, kind=kind, subject=f"s{i}", now=now - 100 + i, cooldown=0, evidence={"seeded": i}
            )
            assert row is not None
            out.append(row.id)
        return out

    ids = api_server.with_store(seed)
    return [{"id": i, "key_id": key_id} for i in ids]


def test_list_filter_and_page_alerts(http: httpx.Client, alerts: list[dict[str, Any]]) -> None:
    key_id = alerts[0]["key_id"]
    listed = http.get("/api/v1/alerts", params={"key_id": key_id}).json()
    assert [a["id"] for a in listed["data"]] == [a["id"] for a in reversed(alerts)]
    first = listed["data"][-1]
    assert first["kind"] == "volume_spike" and first["evidence"] == {"seeded": 0}
    assert set(first) == {"id", "key_id", "kind", "subject", "evidence", "created_at", "acknowledged_at"}
    kinds = http.get("/api/v1/alerts", params={"key_id": key_id, "kind": "new_ip"}).json()
    assert [a["kind"] for a in kinds["data"]] == ["new_ip", "new_ip"]

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"key_id": key_id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/api/v1/alerts", params=params).json()
        seen += [a["id"] for a in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == [a["id"] for a in reversed(alerts)]

    error(http.get("/api/v1/alerts", params={"kind": "meteor"}), 422, "invalid_request", "kind")
    error(http.get("/api/v1/alerts", params={"status": "closed"}), 422, "invalid_request", "status")
    error(http.get("/api/v1/alerts", params={"limit": "0"}), 422, "invalid_request", "limit")
    error(http.get("/api/v1/alerts", params={"cursor": "x"}), 422, "invalid_request", "cursor")


def test_get_and_acknowledge(http: httpx.Client, alerts: list[dict[str, Any]]) -> None:
    target = alerts[1]["id"]
    got = http.get(f"/api/v1/alerts/{target}").json()
    assert got["id"] == target and got["acknowledged_at"] is None
    acked = http.post(f"/api/v1/alerts/{target}/ack")
    assert acked.status_code == 200 and acked.json()["acknowledged_at"] is not None
    again = http.post(f"/api/v1/alerts/{target}/ack").json()
    assert again["acknowledged_at"] == acked.json()["acknowledged_at"]
    key_id = alerts[0]["key_id"]
    open_ids = [a["id"] for a in http.get("/api/v1/alerts", params={"key_id": key_id}).json()["data"]]
    assert target not in open_ids and len(open_ids) == 4
    done = http.get("/api/v1/alerts", params={"key_id": key_id, "status": "acknowledged"}).json()["data"]
    assert [a["id"] for a in done] == [target]
    assert len(http.get("/api/v1/alerts", params={"key_id": key_id, "status": "all"}).json()["data"]) == 5
    error(http.get("/api/v1/alerts/alr_0000000000000000"), 404, "not_found")
    error(http.post("/api/v1/alerts/alr_0000000000000000/ack"), 404, "not_found")
    error(http.get(f"/api/v1/alerts/{target}/ack"), 405, "method_not_allowed")


def test_the_server_runs_the_monitor(api_server: ApiServer, http: httpx.Client) -> None:
    """A key with two weeks from one IP, then a request from a new one: the monitor
    task that the server's lifespan started raises a new_ip alert on its own."""
    key = api_server.create_key("--name", "watched")
    now = time.time()
    history = [record(key["id"], now - d * DAY - 3600, ip="203.0.113.5") for d in range(1, 15)]
    api_server.add_requests(history)
    api_server.add_requests([record(key["id"], now - 1, ip="198.51.100.23")])
    found: list[dict[str, Any]] = []

    def alerted() -> bool:
        found[:] = http.get("/api/v1/alerts", params={"key_id": key["id"], "kind": "new_ip"}).json()["data"]
        return bool(found)

    until_sync(alerted, "the monitor's new_ip alert", within=15, poll=0.2)
    assert len(found) == 1, "the monitor raised no alert"
    assert found[0]["subject"] == "198.51.100.23" and found[0]["evidence"]["known_networks"] == 1
    api_server.wait_for_monitor_runs(3)  # two more runs in full: still one alert
    assert len(http.get("/api/v1/alerts", params={"key_id": key["id"]}).json()["data"]) == 1
