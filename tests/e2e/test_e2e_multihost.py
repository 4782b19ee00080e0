"""Several hosts on one machine: three ``agentrouter serve --workers 2`` instances,
each on a data directory of its own (so no shared memory between them: each has its
own ``limiter.shm``), the same ``secret`` (a key verifies on every instance), one
private PostgreSQL (``store_url``, migrated once with ``agentrouter migrate``) and
one private redis-server (``limiter_url``), all on loopback, all stopped by PID.

The module's cases run in order on one cluster (starting it is most of the cost):
a burst exact across the six workers, a sustained rate over 10 s, key changes made
through one instance's API or the CLI in force on the others, Redis killed with
SIGKILL under load and restarted, PostgreSQL stopped under load and restarted, and
at the end the usage and request log of every key adding up to what was sent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from agentrouter.config import load_settings
from agentrouter.core import Core
from agentrouter.store import open_store
from tests.e2e.conftest import Gateway, agentrouter_cmd, async_client, clean_env, write_config
from tests.servers import PostgresServer, PostgresServers, RedisServer, RedisServers
from tests.upstream_fake import FakeUpstream
from tests.waiting import until_sync

pytestmark = pytest.mark.slow

SECRET = "e2e-multihost-secret-0123456789abcdef0123456789"
MESSAGES = [{"role": "user", "content": "Hello!"}]
INSTANCES = 3
WORKERS = 2
TIMEOUT = 0.25  # limiter_timeout, the default
SLACK = 1.0  # a request's own time through a gateway and the fake on a busy two-core machine
BOUND = 1.0  # the revocation bound the README states


@dataclass
class Cluster:
    pg: PostgresServer
    redis: RedisServer
    store_url: str
    gateways: list[Gateway]
    operator_env: dict[str, str]
    admin: str = ""
    # Every /v1 answer of a key whose usage the last test checks: key id -> statuses.
    ledger: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    @property
    def urls(self) -> list[str]:
        return [gw.url for gw in self.gateways]

    def operator(self, *args: str) -> str:
        """``agentrouter …`` on a machine of its own (a fourth data directory) with the
        cluster's settings: what an operator runs from anywhere."""
        proc = subprocess.run(
            [*agentrouter_cmd(), *args],
            env=self.operator_env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc.stdout

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, socket_timeout=5)

    def stored(self, key_id: str) -> tuple[int, int, int, int]:
        """(usage requests, successes, 4xx, request-log rows) of a key, as PostgreSQL has them."""

        async def read() -> tuple[int, int, int, int]:
            store = await open_store(load_settings(env={"AGENTROUTER_STORE_URL": self.store_url}))
            try:
                row = await store.get_key(key_id)
                assert row is not None
                u = row.usage
                return u.requests, u.successes, u.failures_4xx, await store.count_requests(key_id)
            finally:
                await store.close()

        return asyncio.run(read())


def _gateway(root: Path, i: int, fake: FakeUpstream, down_url: str, store_url: str, limiter_url: str) -> Gateway:
    host = root / f"host{i}"
    data_dir = host / "data"
    data_dir.mkdir(parents=True)
    config = write_config(host / "agentrouter.toml", fake.base_url, down_url, raw_url=fake.raw_base_url)
    gw = Gateway(data_dir, config, workers=WORKERS, store_url=store_url)
    gw.env["AGENTROUTER_LIMITER_URL"] = limiter_url
    gw.env["AGENTROUTER_SECRET"] = SECRET
    return gw


@pytest.fixture(scope="module")
def cluster(fake: FakeUpstream, down_url: str) -> Iterator[Cluster]:
    pgs = PostgresServers()
    root = Path(tempfile.mkdtemp(prefix="agentrouter-multihost-"))
    rss = RedisServers(root)
    gateways: list[Gateway] = []
    try:
        pg = pgs.start()
        pg.sql("CREATE DATABASE agentrouter")
        store_url = pg.url("agentrouter")
        rs = rss.start()
        gateways = [_gateway(root, i + 1, fake, down_url, store_url, rs.url) for i in range(INSTANCES)]
        operator_dir = root / "operator"
        operator_dir.mkdir()
        operator_env = clean_env(operator_dir) | {
            "AGENTROUTER_STORE_URL": store_url,
            "AGENTROUTER_LIMITER_URL": rs.url,
            "AGENTROUTER_SECRET": SECRET,
        }
        c = Cluster(pg, rs, store_url, gateways, operator_env)
        assert "migrated from schema version 0" in c.operator("migrate")  # once, for all
        with ThreadPoolExecutor(INSTANCES) as pool:  # the three start together
            list(pool.map(Gateway.start, gateways))
        c.admin = json.loads(c.operator("keys", "create", "--scope", "manage", "--name", "admin", "--json"))["key"]
        yield c
    finally:
        for gw in gateways:
            gw.stop()
        rss.stop_all()
        pgs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ helpers


async def post(client: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    return await client.post(
        url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
    )


async def flood(urls: list[str], key: str, per_url: int) -> list[tuple[str, httpx.Response]]:
    """``per_url`` requests to each URL, all at once, each on a connection of its own
    (so both workers of every instance take some), interleaved across the URLs."""

    async def one(url: str) -> tuple[str, httpx.Response]:
        async with async_client() as client:
            return url, await post(client, url, key)

    order = [url for _ in range(per_url) for url in urls]
    return list(await asyncio.gather(*(one(u) for u in order)))


# A flood of n fresh connections to an instance misses one of its two workers with
# probability 2·2^-n (the kernel spreads connections over SO_REUSEPORT listeners by
# hash): the floods that must reach every worker send 16 per instance.
EVERY_WORKER = 16


def worker_of(response: httpx.Response) -> str:
    """The worker that answered: request ids start with a per-worker random prefix."""
    return response.headers["x-request-id"][:16]


def note(c: Cluster, key_id: str, answers: list[tuple[str, httpx.Response]]) -> None:
    c.ledger[key_id] += [a.status_code for _url, a in answers]


def api(c: Cluster, i: int) -> httpx.Client:
    """The management API of instance ``i`` (1-based) with the admin key."""
    return httpx.Client(base_url=c.gateways[i - 1].url, timeout=30.0, headers={"authorization": f"Bearer {c.admin}"})


class Load:
    """Requests from ``per_url`` keep-alive connections to each URL until stopped;
    every answer kept as (url, sent, received, status, headers, text), times on the
    wall clock (``time.time``, the clock Redis's ``TIME`` reads on this machine)."""

    def __init__(self, urls: list[str], key: str, *, per_url: int = 2, pause: float = 0.02) -> None:
        self.urls = urls
        self.key = key
        self.per_url = per_url
        self.pause = pause
        self.answers: list[tuple[str, float, float, int, dict[str, str], str]] = []
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self, url: str) -> None:
        async with async_client(timeout=10.0) as client:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    resp = await post(client, url, self.key)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.answers.append((url, sent, time.time(), resp.status_code, dict(resp.headers), resp.text))
                await asyncio.sleep(self.pause)  # a bounded rate per connection

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(u)) for _ in range(self.per_url) for u in self.urls]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def since(self, start: float) -> list[tuple[str, float, float, int, dict[str, str], str]]:
        return [a for a in self.answers if a[1] >= start]

    def statuses(self) -> list[int]:
        return [a[3] for a in self.answers]


async def wait_for(predicate: Any, within: float, pause: float = 0.05) -> float:
    """Seconds until ``await predicate()`` holds; fails after ``within``."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(pause)
    return time.monotonic() - started


async def make_keys(c: Cluster, n: int, **options: Any) -> list[dict[str, str]]:
    """``n`` keys through the key service on the cluster's settings (the CLI's way,
    without a process per key)."""
    core = await Core.from_settings(load_settings(env=c.operator_env))
    try:
        made = [await core.keys.create(**options) for _ in range(n)]
    finally:
        await core.close()
    return [{"id": m.row.id, "key": m.key} for m in made]


def bucket_in_redis(c: Cluster, key_id: str) -> float:
    """How far the key's bucket TAT in Redis is ahead of Redis's clock (0: no bucket)."""
    client = c.redis_client()
    try:
        state = client.hmget(f"{{ar:key:{key_id}}}:bucket", "s")
        if state[0] is None:
            return 0.0
        now_s, now_us = client.time()
        return int(state[0]) - (now_s + now_us / 1e6)
    finally:
        client.close()


# ------------------------------------------------------------------ limits


async def test_a_burst_is_exact_across_six_workers_of_three_instances(cluster: Cluster) -> None:
    c = cluster
    (key,) = await make_keys(c, 1, requests=30, interval=3600)
    answers = await flood(c.urls, key["key"], 40)  # 120 at once, 40 per instance
    note(c, key["id"], answers)
    statuses = Counter(a.status_code for _u, a in answers)
    assert statuses == {200: 30, 429: 90}, statuses  # tolerance 0
    # Each admitted request saw its own place in the one count, whichever host took it.
    remaining = sorted(int(a.headers["x-ratelimit-remaining"]) for _u, a in answers if a.status_code == 200)
    assert remaining == list(range(30))
    # The flood reached every worker of every instance (request ids: a prefix per worker).
    workers = {(u, worker_of(a)) for u, a in answers}
    assert len(workers) == INSTANCES * WORKERS, workers
    assert len({u for u, a in answers if a.status_code == 200}) >= 2, "admissions came from several instances"
    assert 3600 - 5 < bucket_in_redis(c, key["id"]) <= 3600  # all 30 admissions are in Redis's bucket


async def test_a_sustained_rate_across_instances_is_r_t_over_i_plus_c(cluster: Cluster) -> None:
    """R = 10 per I = 2 s (one every T = 0.2 s, a burst of C = 10), offered at about
    75 requests a second over six connections (two per instance) for 10 s.

    How t is measured: GCRA admits the burst C at the first admission (time a), then
    the k-th further admission no earlier than a + k·T (the bucket never refills in
    between: it is drained within ~0.2 s and requests keep coming), and — the load
    being far above the rate — no later than a + k·T + g, g the gap between two
    requests (~15 ms here). So with b the last admission, N − C lies in
    [(b − a)/T − g/T, (b − a)/T]: within ±1 of R·(b − a)/I. a and b are the times
    Redis decided (its ``TIME``, the same kernel clock as the test's ``time.time``
    on one machine); each lies between the send and the answer of its request, so
    the midpoint is taken (an error of half a round trip, a few ms ≪ T). A span
    from before the first request to after the load stopped would overcount by up
    to one T at the end, which would eat the tolerance.
    """
    c = cluster
    r, i, burst = 10, 2.0, 10
    (key,) = await make_keys(c, 1, requests=r, interval=i)
    load = Load(c.urls, key["key"], per_url=2, pause=0.06)
    load.start()
    started = time.monotonic()
    await wait_for(lambda: _after(started, 10.0), 15.0, pause=0.1)
    await load.stop()
    c.ledger[key["id"]] += load.statuses()
    assert not load.errors, load.errors[:5]
    admitted = sorted((a[1] + a[2]) / 2 for a in load.answers if a[3] == 200)
    assert set(load.statuses()) <= {200, 429}, Counter(load.statuses())
    t = admitted[-1] - admitted[0]
    expected = r * t / i + burst
    print(f"sustained: {len(admitted)} admitted of {len(load.answers)} in t = {t:.3f} s; R·t/I + C = {expected:.2f}")
    assert t > 9.0, t
    assert abs(len(admitted) - expected) <= 1, (len(admitted), expected, t, len(load.answers))
    assert {a[0] for a in load.answers if a[3] == 200} == set(c.urls), "every instance admitted some"


async def _after(started: float, seconds: float) -> bool:
    return time.monotonic() - started >= seconds


# ------------------------------------------------------------------ key changes across instances


async def test_key_changes_on_one_instance_are_in_force_on_the_others(cluster: Cluster) -> None:
    c = cluster
    urls = c.urls
    # Made through instance 3's API: works on instance 1 (and 2) at once.
    with api(c, 3) as three:
        made = three.post("/api/v1/keys", json={"name": "made-on-3"})
        assert made.status_code == 201, made.text
    fresh = made.json()
    answers = await flood([urls[0], urls[1]], fresh["key"], 8)
    note(c, fresh["id"], answers)
    assert {a.status_code for _u, a in answers} == {200}, [a.text for _u, a in answers if a.status_code != 200]

    # Deleted through instance 1's API: refused on instances 2 and 3 within the bound
    # (in fact on their first request after the deletion answered: the revoked flag
    # is read with the bucket).
    with api(c, 1) as one:
        doomed = one.post("/api/v1/keys", json={"name": "deleted-on-1"}).json()
        used = await flood(urls, doomed["key"], 4)
        assert {a.status_code for _u, a in used} == {200}
        deleted = one.delete(f"/api/v1/keys/{doomed['id']}")
        assert deleted.status_code == 200 and deleted.json()["state"] == "deleted", deleted.text
        returned = time.monotonic()
        refused = await flood([urls[1], urls[2]], doomed["key"], EVERY_WORKER)
        took = time.monotonic() - returned
    assert {a.status_code for _u, a in refused} == {401}, [a.text for _u, a in refused]
    assert all("has been deleted" in a.json()["error"]["message"] for _u, a in refused)
    assert len({(u, worker_of(a)) for u, a in refused}) == 4, "every worker of instances 2 and 3 refused it"
    assert took < BOUND, took

    # A limit changed through instance 2's API (the key-set generation, not a flag):
    # instances 1 and 3 apply the new limit on their next request.
    with api(c, 2) as two:
        changed = two.patch(f"/api/v1/keys/{fresh['id']}", json={"rate_limit": {"requests": 1, "interval": 3600}})
        assert changed.status_code == 200, changed.text
        returned = time.monotonic()
    after = await flood([urls[0], urls[2]], fresh["key"], 6)
    took = time.monotonic() - returned
    note(c, fresh["id"], after)
    assert Counter(a.status_code for _u, a in after) == {200: 1, 429: 11}
    assert {a.headers["x-ratelimit-limit"] for _u, a in after} == {"1"}
    assert took < BOUND + SLACK, took

    # Deleted from the CLI on a machine that runs no gateway, with the same settings:
    # refused on every instance.
    (cli_key,) = await make_keys(c, 1)
    assert {a.status_code for _u, a in await flood(urls, cli_key["key"], 4)} == {200}
    c.operator("keys", "delete", cli_key["id"], "--yes")
    returned = time.monotonic()
    refused = await flood(urls, cli_key["key"], EVERY_WORKER)
    took = time.monotonic() - returned
    assert {a.status_code for _u, a in refused} == {401}, [a.text for _u, a in refused]
    assert len({(u, worker_of(a)) for u, a in refused}) == INSTANCES * WORKERS
    assert took < BOUND, took


# ------------------------------------------------------------------ Redis killed under load


def limiter_metrics(c: Cluster) -> list[dict[str, float]]:
    """Each instance's limiter figures on /metrics (summed over its workers)."""
    wanted = {
        "agentrouter_limiter_redis_available",
        "agentrouter_limiter_redis_outages_total",
        "agentrouter_limiter_failure_mode_decisions_total",
    }
    out = []
    for gw in c.gateways:
        text = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {c.admin}"}, timeout=10).text
        found = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in wanted
        }
        out.append({name.removeprefix("agentrouter_limiter_"): found.get(name, 0.0) for name in wanted})
    return out


async def test_redis_killed_under_load_then_restarted(cluster: Cluster) -> None:
    c = cluster
    logs_before = [gw.log_path.read_text(errors="replace") for gw in c.gateways]
    metrics_before = await asyncio.to_thread(limiter_metrics, c)
    assert [m["redis_available"] for m in metrics_before] == [WORKERS] * INSTANCES, metrics_before
    (load_key,) = await make_keys(c, 1, requests=100000, interval=60)
    probes = await make_keys(c, 16, requests=4, interval=3600)
    (victim,) = await make_keys(c, 1)
    loaded = await flood(c.urls, victim["key"], 6)  # in every worker's table
    assert {a.status_code for _u, a in loaded} == {200}
    load = Load(c.urls, load_key["key"], per_url=2, pause=0.02)
    load.start()
    try:
        await wait_for(lambda: _count(load, 0.0, 30), 10)
        killed = time.time()
        c.redis.kill()  # SIGKILL by PID: no shutdown, no save
        noticed = killed + TIMEOUT + 0.5  # every worker is in the failure mode by then
        await wait_for(lambda: _count(load, noticed, 60), 10)
        down = load.since(noticed)
        # A deletion while Redis is down (no flag, no generation to read): the other
        # hosts reload their tables from PostgreSQL about once a second meanwhile.
        with api(c, 1) as one:
            assert one.delete(f"/api/v1/keys/{victim['id']}").status_code == 200
        deleted = time.monotonic()

        async def refused_everywhere() -> bool:
            answers = await flood(c.urls, victim["key"], 4)
            return {a.status_code for _u, a in answers} == {401}

        await wait_for(refused_everywhere, 5.0, pause=0.02)
        refused_after = time.monotonic() - deleted
        c.redis.start()  # the same port, empty: no buckets, no flags, no generation, no library
        restarted = time.monotonic()

        async def exact() -> bool:
            # A burst on a fresh key over every instance is exactly its limit, all in Redis.
            probe = probes.pop(0)
            answers = await flood(c.urls, probe["key"], 4)
            note(c, probe["id"], answers)
            return Counter(a.status_code for _u, a in answers) == {200: 4, 429: 8} and (
                bucket_in_redis(c, probe["id"]) > 3600 - 5
            )

        back = await wait_for(exact, 5.0, pause=0.25)
        assert time.monotonic() - restarted < 5.0
    finally:
        await load.stop()
        c.ledger[load_key["id"]] += load.statuses()

    assert back < 5.0, f"exact again {back:.1f} s after Redis restarted"
    print(f"deletion during the outage refused everywhere after {refused_after:.2f} s; exact {back:.2f} s after")
    assert refused_after < BOUND + SLACK, refused_after
    assert not load.errors, load.errors[:5]
    assert all(s < 500 for s in load.statuses()), Counter(load.statuses())
    slowest = max(a[2] - a[1] for a in load.answers)
    assert slowest < TIMEOUT + SLACK, f"a request took {slowest:.2f} s"
    # The default failure mode, local: each host's shared-memory limiter decides.
    assert {a[0] for a in down} == set(c.urls)
    for _url, _sent, _got, status, headers, text in down:
        assert status == 200 and "x-ratelimit-remaining" in headers, (status, text)

    # Counted on every instance's /metrics: one outage per worker, the decisions the
    # failure mode made, and every worker's Redis answering again (snapshots lag ~1 s).
    def counted() -> bool:
        after = limiter_metrics(c)
        return all(
            a["redis_outages_total"] - b["redis_outages_total"] == WORKERS
            and a["failure_mode_decisions_total"] > b["failure_mode_decisions_total"]
            and a["redis_available"] == WORKERS
            for a, b in zip(after, metrics_before, strict=True)
        )

    await asyncio.to_thread(until_sync, counted, "the outage on /metrics", within=10, poll=0.25)
    # Logged once per worker when it went, once when it came back.
    for gw, before in zip(c.gateways, logs_before, strict=True):
        log = gw.log_path.read_text(errors="replace")[len(before) :]
        assert log.count("is unavailable: ") == WORKERS, log
        assert log.count("answers again after") == WORKERS, log


async def _count(load: Load, since: float, n: int) -> bool:
    return len(load.since(since)) >= n


# ------------------------------------------------------------------ PostgreSQL stopped under load


async def test_postgres_stopped_under_load_then_restarted(cluster: Cluster) -> None:
    c = cluster
    (key,) = await make_keys(c, 1, requests=100000, interval=60)
    logs_before = [len(gw.log_path.read_text(errors="replace")) for gw in c.gateways]
    # The key loaded by every worker first: /v1 serves the keys loaded before the outage
    # (a key made a moment before it may be unknown to a worker that has not reloaded yet).
    before = await flood(c.urls, key["key"], EVERY_WORKER)
    note(c, key["id"], before)
    assert {a.status_code for _u, a in before} == {200}
    assert len({(u, worker_of(a)) for u, a in before}) == INSTANCES * WORKERS
    load = Load(c.urls, key["key"], per_url=1, pause=0.05)
    load.start()
    try:
        await wait_for(lambda: _count(load, 0.0, 20), 10)
        c.pg.stop()  # by PID, fast shutdown: every connection is cut
        stopped = time.time()
        # /v1 still serves on every instance, fresh connections included.
        during = await flood(c.urls, key["key"], 4)
        note(c, key["id"], during)
        assert {a.status_code for _u, a in during} == {200}, [a.text for _u, a in during]
        async with async_client() as client:
            for url in c.urls:
                listed = await client.get(url + "/api/v1/keys", headers={"authorization": f"Bearer {c.admin}"})
                assert listed.status_code == 503 and listed.json()["error"]["type"] == "service_unavailable"

        # Every instance's usage flush has met the dead database (about once a second).
        def flush_failed() -> bool:
            return all(
                "writing usage for" in gw.log_path.read_text(errors="replace")[n:]
                for gw, n in zip(c.gateways, logs_before, strict=True)
            )

        await asyncio.to_thread(until_sync, flush_failed, "a usage flush failing on every instance", within=20)
        assert {a[3] for a in load.since(stopped)} == {200}
        c.pg.start()

        async def ready() -> bool:
            async with async_client() as client:
                return all([(await client.get(u + "/readyz")).status_code == 200 for u in c.urls])

        await wait_for(ready, 20, pause=0.1)
        back = time.time()
        await wait_for(lambda: _count(load, back, 2 * INSTANCES), 5)
    finally:
        await load.stop()
        c.ledger[key["id"]] += load.statuses()
    assert not load.errors, load.errors[:5]
    assert set(load.statuses()) == {200}
    answered = len(c.ledger[key["id"]])
    # Requests answered = requests stored: usage totals and request-log rows alike.
    want = (answered, answered, 0, answered)
    await asyncio.to_thread(until_sync, lambda: c.stored(key["id"]) == want, "usage written", within=20, poll=0.25)


# ------------------------------------------------------------------ it all adds up


def test_usage_and_request_log_of_all_instances_add_up(cluster: Cluster) -> None:
    c = cluster
    assert len(c.ledger) >= 5
    sent = 0
    for key_id, statuses in c.ledger.items():
        n = len(statuses)
        sent += n
        want = (n, statuses.count(200), sum(1 for s in statuses if 400 <= s < 500), n)

        def written(key_id: str = key_id, want: tuple[int, ...] = want) -> bool:
            return c.stored(key_id) == want

        until_sync(written, f"the usage of {key_id}", within=15, poll=0.25)
    print(f"{sent} answers of {len(c.ledger)} keys, every one stored once")
    assert sent > 1000
