"""The monitor's periodic task over a real store: findings become alerts once, only
the lease holder works, the log is pruned by retention, alerts reach the webhook,
the task starts and stops cleanly. (Its settings are the server's: tests/test_config.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentrouter._core import FakeClock
from agentrouter.config import Settings
from agentrouter.core import Core
from agentrouter.monitor import Monitor
from agentrouter.store.models import RequestRecord
from tests.waiting import until

HOUR = 3600.0
DAY = 86400.0


pytestmark = pytest.mark.store_backends()


def requests(
    key_id: str, start: float, n: int, *, every: float = 1.0, ip: str = "203.0.113.1", status: int = 200
) -> list[RequestRecord]:
    return [
        RequestRecord(
            key_id=key_id,
            time=start + i * every,
            model="gpt-4o",
            status=status,
            latency_ms=5.0,
            input_tokens=3,
            output_tokens=2,
            client_ip=ip,
            user_agent="t",
        )
        for i in range(n)
    ]


async def seed_known_key(core: Core, clock: FakeClock) -> str:
    """A key used from one IP, 10 requests every hour, for the last 20 days."""
    key = (await core.keys.create(name="steady")).row
    now = clock.unix
    batch: list[RequestRecord] = []
    start = (now // HOUR) * HOUR - 20 * DAY
    for h in range(20 * 24):
        batch += requests(key.id, start + h * HOUR, 10, every=60)
    await core.store.add_requests(batch)
    return key.id


async def test_steady_key_raises_nothing_then_a_new_ip_raises_one_alert(core: Core, clock: FakeClock) -> None:
    key_id = await seed_known_key(core, clock)
    monitor = Monitor(core.store, Settings(), clock=core.now)
    result = await monitor.run_once()
    assert result.leader and result.keys_checked == 1 and result.alerts == []

    await monitor.store.add_requests(requests(key_id, clock.unix - 30, 3, ip="192.0.2.77"))
    result = await monitor.run_once()
    [alert] = result.alerts
    assert (alert.key_id, alert.kind, alert.subject) == (key_id, "new_ip", "192.0.2.77")
    assert alert.evidence["known_networks"] == 1
    # The next runs see the same condition: no second alert.
    clock.advance(60)
    assert (await monitor.run_once()).alerts == []
    assert len(await monitor.store.list_alerts()) == 1


async def test_only_the_lease_holder_runs(core: Core, clock: FakeClock) -> None:
    settings = Settings(monitor_interval=10)
    one = Monitor(core.store, settings, clock=core.now, holder="one")
    two = Monitor(core.store, settings, clock=core.now, holder="two")
    assert (await one.run_once()).leader
    assert not (await two.run_once()).leader
    assert one.leader and not two.leader and (one.runs, two.runs) == (1, 0)
    clock.advance(one.lease_ttl + 1)  # "one" died without releasing
    assert (await two.run_once()).leader
    assert not (await one.run_once()).leader
    assert two.leader and not one.leader


async def test_request_log_is_pruned_by_retention(core: Core, clock: FakeClock) -> None:
    analytics = core.store
    now = clock.unix
    await analytics.add_requests(requests("key_x", now - 40 * DAY, 5) + requests("key_x", now - 1 * DAY, 7))
    monitor = Monitor(core.store, Settings(request_log_retention_days=30), clock=core.now)
    result = await monitor.run_once()
    assert result.pruned == 5
    assert await analytics.count_requests() == 7


class Hook:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[Any] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook([])
    yield h
    h.close()


async def test_new_alerts_reach_the_webhook_and_failed_ones_are_tried_again(
    core: Core, clock: FakeClock, hook: Hook
) -> None:
    key_id = await seed_known_key(core, clock)
    await core.store.add_requests(requests(key_id, clock.unix - 30, 1, ip="192.0.2.50"))
    hook.statuses = [500, 500]  # the first run's try and its one retry fail
    settings = Settings(alert_webhook_url=hook.url, alert_webhook_retries=1, alert_webhook_backoff=0.01)
    monitor = Monitor(core.store, settings, clock=core.now)
    try:
        first = await monitor.run_once()
        assert len(first.alerts) == 1 and first.notified == 0 and first.notify_failed == 1
        second = await monitor.run_once()
        assert second.alerts == [] and second.notified == 1
        third = await monitor.run_once()
        assert third.notified == 0 and third.notify_failed == 0
    finally:
        await monitor.stop()
    assert len(hook.bodies) == 3
    body = hook.bodies[-1]
    assert body["type"] == "agentrouter.alert"
    assert body["alert"]["kind"] == "new_ip" and body["alert"]["key_id"] == key_id
    assert body["key"]["name"] == "steady" and body["key"]["prefix"].startswith("sk-ar-")
    row = (await monitor.store.list_alerts())[0]
    assert row.notified_at is not None and row.notify_attempts == 2


async def test_the_task_runs_periodically_and_stops_cleanly(core: Core) -> None:
    monitor = Monitor(core.store, Settings(monitor_interval=0.05), clock=core.now)
    monitor.start()
    monitor.start()  # idempotent: one task
    await until(lambda: monitor.runs >= 3, "three runs of the task")
    task = monitor._task
    assert task is not None
    await monitor.stop()
    assert task.done() and not task.cancelled()
    # The lease was released: another process takes it at once.
    other = Monitor(core.store, Settings(), clock=core.now, holder="other")
    assert (await other.run_once()).leader


async def test_with_detectors_disabled_the_task_still_prunes(core: Core, clock: FakeClock) -> None:
    key_id = await seed_known_key(core, clock)
    analytics = core.store
    await analytics.add_requests(
        requests(key_id, clock.unix - 40 * DAY, 2) + requests(key_id, clock.unix - 30, 1, ip="192.0.2.1")
    )
    monitor = Monitor(core.store, Settings(monitor_enabled=False), clock=core.now)
    result = await monitor.run_once()
    assert result.leader and result.pruned == 2 and result.keys_checked == 0 and result.alerts == []
    assert await analytics.list_alerts() == []
