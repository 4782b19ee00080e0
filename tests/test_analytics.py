"""The request log and what is computed from it, against a real SQLite file:
batches and rollups, time series with exact percentiles, distinct IPs, the per-model
breakdown, pruning by retention, alerts (dedup, cooldown, acknowledgement) and leases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from agentrouter.core import Core
from agentrouter.store import Store, open_store
from agentrouter.store.analytics import MAX_BUCKETS, UsageQueryError
from agentrouter.store.models import RequestRecord
from tests.conftest import settings_on

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


pytestmark = pytest.mark.store_backends()


@pytest.fixture
async def store(tmp_path: Path, store_url: str | None) -> AsyncIterator[Store]:
    s = await open_store(settings_on(tmp_path, store_url=store_url))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def analytics(store: Store) -> Store:
    return store


def rec(
    t: float,
    *,
    key: str = "key_a",
    status: int = 200,
    latency: float = 10.0,
    model: str | None = "gpt-4o",
    tin: int = 10,
    tout: int = 5,
    ip: str | None = "10.0.0.1",
    ua: str | None = "test/1.0",
) -> RequestRecord:
    return RequestRecord(
        key_id=key,
        time=t,
        model=model,
        status=status,
        latency_ms=latency,
        input_tokens=tin,
        output_tokens=tout,
        client_ip=ip,
        user_agent=ua,
        caller_request_id="caller-7",
    )


async def test_migration_adds_the_tables(store: Store) -> None:
    assert await store.schema_version() >= 3  # 2: the request log and its rollups; 3: caller_request_id


async def test_a_batch_is_one_row_per_request_and_never_a_key(store: Store, analytics: Store) -> None:
    await analytics.add_requests([rec(T0 + i, ua="x" * 2000) for i in range(5)])
    await analytics.add_requests([])
    assert await analytics.count_requests() == 5
    assert await analytics.count_requests("key_a") == 5
    row = (await store.request_log(limit=1))[0]
    assert row == msgspec.structs.replace(rec(T0, ua="x" * 512))  # long user agents are cut, not refused
    assert row.caller_request_id == "caller-7"


async def test_usage_totals_series_and_percentiles(analytics: Store) -> None:
    # Minute 0: latencies 1..20 (p50 = 10, p95 = 19); minute 2: 100 twice; minute 1: nothing.
    batch = [rec(T0 + i, latency=float(i + 1)) for i in range(20)]
    batch += [rec(T0 + 120 + i, latency=100.0, status=503, ip="10.0.0.2", tin=1, tout=0) for i in range(2)]
    batch += [rec(T0 + 130, status=429, model=None, ip=None, tin=0, tout=0)]
    await analytics.add_requests(batch)
    report = await analytics.usage(since=T0, until=T0 + 180, bucket="minute")
    assert report.since == T0 and report.until == T0 + 180 and report.bucket_seconds == 60
    assert [b.start for b in report.series] == [T0, T0 + 60, T0 + 120]
    m0, m1, m2 = report.series
    assert (m0.requests, m0.successes, m0.latency_ms_p50, m0.latency_ms_p95) == (20, 20, 10.0, 19.0)
    assert (m1.requests, m1.latency_ms_p50, m1.distinct_client_ips) == (0, None, 0)
    assert (m2.requests, m2.failures_5xx, m2.failures_4xx, m2.distinct_client_ips) == (3, 2, 1, 1)
    t = report.totals
    assert (t.requests, t.successes, t.failures_4xx, t.failures_5xx) == (23, 20, 1, 2)
    assert (t.input_tokens, t.output_tokens, t.distinct_client_ips) == (202, 100, 2)
    assert t.requests == sum(b.requests for b in report.series)
    assert t.input_tokens == sum(b.input_tokens for b in report.series)
    models = {m.model: m for m in report.models}
    assert [m.model for m in report.models] == ["gpt-4o", None]
    assert models["gpt-4o"].requests == 22 and models[None].requests == 1


async def test_usage_per_key_and_range_bounds(analytics: Store) -> None:
    await analytics.add_requests([rec(T0 + 10, key="key_a"), rec(T0 + 20, key="key_b"), rec(T0 + 3600, key="key_a")])
    a = await analytics.usage(since=T0, until=T0 + 3600, bucket="hour", key_id="key_a")
    assert a.key_id == "key_a" and a.totals.requests == 1  # until is exclusive
    both = await analytics.usage(since=T0 + 1800, until=T0 + 7200, bucket="hour")
    assert both.since == T0  # aligned down to the bucket
    assert [b.requests for b in both.series] == [2, 1]
    day = await analytics.usage(since=T0, until=T0 + 86400, bucket="day")
    assert [b.requests for b in day.series] == [3]


async def test_usage_refuses_bad_ranges(analytics: Store) -> None:
    with pytest.raises(UsageQueryError) as err:
        await analytics.usage(since=T0, until=T0, bucket="hour")
    assert err.value.field == "until"
    with pytest.raises(UsageQueryError) as err:
        await analytics.usage(since=T0, until=T0 + 60 * (MAX_BUCKETS + 1), bucket="minute")
    assert err.value.field == "by"
    with pytest.raises(UsageQueryError):
        await analytics.usage(since=T0, until=T0 + 60, bucket="week")  # type: ignore[arg-type]


async def test_hourly_rollups_and_known_ips_follow_the_log(analytics: Store) -> None:
    await analytics.add_requests([rec(T0 + 5, ip="10.0.0.1"), rec(T0 + 7, status=500, ip="10.0.0.9")])
    await analytics.add_requests([rec(T0 + 3, status=404, ip="10.0.0.1"), rec(T0 + 3700, ip=None)])
    hours = await analytics.hourly(["key_a", "key_x"], T0)
    assert hours["key_x"] == []
    h0, h1 = hours["key_a"]
    assert (h0.start, h0.requests, h0.failures_4xx, h0.failures_5xx) == (T0, 3, 1, 1)
    assert (h1.start, h1.requests) == (T0 + 3600, 1)
    ips = {i.ip: i for i in (await analytics.client_ips(["key_a"]))["key_a"]}
    assert set(ips) == {"10.0.0.1", "10.0.0.9"}
    assert (ips["10.0.0.1"].first_seen, ips["10.0.0.1"].last_seen, ips["10.0.0.1"].requests) == (T0 + 3, T0 + 5, 2)


async def test_pruning_by_retention_keeps_rollups(analytics: Store) -> None:
    await analytics.add_requests([rec(T0 + i * 60) for i in range(12_000)])  # more than one prune batch
    assert await analytics.oldest_request() == T0
    deleted = await analytics.prune(log_before=T0 + 6000 * 60)
    assert deleted == 6000
    assert await analytics.count_requests() == 6000
    assert await analytics.oldest_request() == T0 + 6000 * 60
    hours = (await analytics.hourly(["key_a"], T0))["key_a"]
    assert sum(h.requests for h in hours) == 12_000  # baselines outlive the log
    await analytics.prune(log_before=T0, rollups_before=T0 + 3600)
    hours = (await analytics.hourly(["key_a"], 0))["key_a"]
    assert hours[0].start == T0 + 3600


async def test_keys_used_since_lists_active_keys_only(core: Core) -> None:
    analytics = core.store
    a = (await core.keys.create(name="a")).row
    b = (await core.keys.create(name="b")).row
    await analytics.add_requests([rec(T0, key=a.id), rec(T0 + 7200, key=b.id), rec(T0 + 7200, key="key_gone")])
    assert await analytics.keys_used_since(T0 + 3600) == [b.id]
    assert sorted(await analytics.keys_used_since(T0)) == sorted([a.id, b.id])
    await core.keys.delete(b.id)
    assert await analytics.keys_used_since(T0 + 3600) == []


async def test_alerts_dedup_cooldown_and_acknowledgement(analytics: Store) -> None:
    first = await analytics.record_alert(
        key_id="key_a", kind="new_ip", subject="192.0.2.1", evidence={"ip": "192.0.2.1"}, now=T0, cooldown=0
    )
    assert first is not None and first.id.startswith("alr_") and first.evidence == {"ip": "192.0.2.1"}
    # The same condition again: no second alert, ever.
    assert (
        await analytics.record_alert(
            key_id="key_a", kind="new_ip", subject="192.0.2.1", evidence={}, now=T0 + 86400 * 30, cooldown=0
        )
        is None
    )
    # Another network is another condition.
    assert (
        await analytics.record_alert(
            key_id="key_a", kind="new_ip", subject="192.0.2.2", evidence={}, now=T0 + 1, cooldown=0
        )
        is not None
    )
    # Rate-like kinds: quiet for the cooldown, whatever the hour.
    spike = await analytics.record_alert(
        key_id="key_a", kind="volume_spike", subject="h1", evidence={}, now=T0 + 10, cooldown=3600
    )
    assert spike is not None
    assert (
        await analytics.record_alert(
            key_id="key_a", kind="volume_spike", subject="h2", evidence={}, now=T0 + 3000, cooldown=3600
        )
        is None
    )
    assert (
        await analytics.record_alert(
            key_id="key_b", kind="volume_spike", subject="h2", evidence={}, now=T0 + 3000, cooldown=3600
        )
        is not None
    )
    assert (
        await analytics.record_alert(
            key_id="key_a", kind="volume_spike", subject="h3", evidence={}, now=T0 + 3611, cooldown=3600
        )
        is not None
    )
    with pytest.raises(ValueError):
        await analytics.record_alert(key_id="key_a", kind="bogus", subject="", evidence={}, now=T0, cooldown=0)

    open_alerts = await analytics.list_alerts()
    assert len(open_alerts) == 5
    assert [a.created_at for a in open_alerts] == sorted((a.created_at for a in open_alerts), reverse=True)
    acked = await analytics.acknowledge_alert(first.id, now=T0 + 99)
    assert acked is not None and acked.acknowledged_at == T0 + 99
    again = await analytics.acknowledge_alert(first.id, now=T0 + 500)
    assert again is not None and again.acknowledged_at == T0 + 99  # the first time is kept
    assert await analytics.acknowledge_alert("alr_missing", now=T0) is None
    assert len(await analytics.list_alerts()) == 4
    assert [a.id for a in await analytics.list_alerts(acknowledged=True)] == [first.id]
    assert len(await analytics.list_alerts(acknowledged=None)) == 5
    assert {a.kind for a in await analytics.list_alerts(kind="volume_spike", acknowledged=None)} == {"volume_spike"}
    assert {a.key_id for a in await analytics.list_alerts(key_id="key_b", acknowledged=None)} == {"key_b"}
    # Cursor pagination: newest first, no overlap, nothing skipped.
    page1 = await analytics.list_alerts(acknowledged=None, limit=2)
    page2 = await analytics.list_alerts(acknowledged=None, limit=2, before=(page1[-1].created_at, page1[-1].id))
    page3 = await analytics.list_alerts(acknowledged=None, limit=2, before=(page2[-1].created_at, page2[-1].id))
    ids = [a.id for a in page1 + page2 + page3]
    assert len(ids) == len(set(ids)) == 5


async def test_notification_bookkeeping(analytics: Store) -> None:
    a = await analytics.record_alert(key_id="key_a", kind="new_ip", subject="x", evidence={}, now=T0, cooldown=0)
    assert a is not None
    assert [x.id for x in await analytics.alerts_to_notify(created_after=T0 - 1, max_attempts=2)] == [a.id]
    await analytics.note_notification(a.id, delivered_at=None)
    await analytics.note_notification(a.id, delivered_at=None)
    assert await analytics.alerts_to_notify(created_after=T0 - 1, max_attempts=2) == []  # gave up
    assert [x.id for x in await analytics.alerts_to_notify(created_after=T0 - 1, max_attempts=3)] == [a.id]
    await analytics.note_notification(a.id, delivered_at=T0 + 5)
    assert await analytics.alerts_to_notify(created_after=T0 - 1, max_attempts=10) == []
    row = await analytics.get_alert(a.id)
    assert row is not None and row.notified_at == T0 + 5 and row.notify_attempts == 3


async def test_lease_is_held_by_one_holder_until_it_expires(tmp_path: Path, store_url: str | None) -> None:
    # Two processes' (or hosts') worth of connections to one database.
    (tmp_path / "a").mkdir()
    s1 = await open_store(settings_on(tmp_path / "a", store_url=store_url))
    s2 = await open_store(settings_on(tmp_path / ("a" if store_url is None else "b"), store_url=store_url))
    try:
        a, b = s1, s2
        assert await a.take_lease("monitor", "one", now=100, ttl=30)
        assert not await b.take_lease("monitor", "two", now=110, ttl=30)
        assert await a.take_lease("monitor", "one", now=120, ttl=30)  # renewal
        assert not await b.take_lease("monitor", "two", now=149, ttl=30)
        assert await b.take_lease("monitor", "two", now=150, ttl=30)  # expired: taken over
        assert not await a.take_lease("monitor", "one", now=151, ttl=30)
        await b.release_lease("monitor", "two")
        assert await a.take_lease("monitor", "one", now=152, ttl=30)
    finally:
        await s1.close()
        await s2.close()


async def test_concurrent_writes_of_one_process_share_the_connection_safely(store: Store, analytics: Store) -> None:
    """The usage flush, the monitor and API requests of one worker write through one
    connection at the same time; each gets its own transaction, in turn."""
    import asyncio

    batches = [[rec(T0 + i * 100 + j, key=f"key_{i}") for j in range(50)] for i in range(5)]
    await asyncio.gather(
        *(analytics.add_requests(b) for b in batches),
        *(
            analytics.record_alert(key_id=f"key_{i}", kind="new_ip", subject="x", evidence={}, now=T0, cooldown=0)
            for i in range(5)
        ),
        *(analytics.take_lease("monitor", f"h{i}", now=T0, ttl=30) for i in range(3)),
    )
    assert await analytics.count_requests() == 250
    assert len(await analytics.list_alerts()) == 5
