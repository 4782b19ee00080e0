"""A real ``agentrouter serve`` on a private PostgreSQL that is stopped under it (by PID)
and started again: ``/v1`` goes on serving the keys it loaded, ``/api`` answers 503
``service_unavailable``, ``/readyz`` says why, the usage writer keeps the batches and
writes them when the database is back (requests answered = requests stored). And the
start-up refusals: a database that is behind, one that cannot be reached (the URL shown
without its password)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from agentrouter.config import load_settings
from agentrouter.store import open_store
from tests.e2e.conftest import Gateway, agentrouter_cmd, async_client, clean_env, free_port, write_config
from tests.services import PostgresServers
from tests.upstream_fake import FakeUpstream
from tests.waiting import until_sync

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Hello!"}]


async def _send(url: str, key: str, n: int) -> list[int]:
    async def one(i: int) -> int:
        async with async_client() as client:
            resp = await client.post(
                url + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {key}"},
            )
            return resp.status_code

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _stored(store_url: str, key_id: str) -> tuple[int, int]:
    """(the key's usage total, its request-log rows) as the database holds them."""

    async def read() -> tuple[int, int]:
        store = await open_store(load_settings(env={"AGENTROUTER_STORE_URL": store_url}))
        try:
            row = await store.get_key(key_id)
            assert row is not None
            return row.usage.requests, await store.count_requests(key_id)
        finally:
            await store.close()

    return asyncio.run(read())


def _gateway(tmp_path: Path, fake: FakeUpstream, down_url: str, store_url: str) -> Gateway:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = write_config(tmp_path / "agentrouter.toml", fake.base_url, down_url, raw_url=fake.raw_base_url)
    return Gateway(data_dir, config, workers=2, store_url=store_url)


def test_postgres_stopped_under_a_running_server_loses_nothing(
    tmp_path: Path, fake: FakeUpstream, down_url: str, postgres_servers: PostgresServers
) -> None:
    pg = postgres_servers.start()
    pg.sql("CREATE DATABASE agentrouter")
    store_url = pg.url("agentrouter", password="not-needed-but-secret")
    gw = _gateway(tmp_path, fake, down_url, store_url)
    assert "migrated from schema version 0" in gw.cli("migrate").stdout
    gw.start()
    try:
        key = gw.create_key(name="outage")
        admin = gw.cli_json("keys", "create", "--scope", "manage", "--name", "admin")
        headers = {"Authorization": f"Bearer {admin['key']}"}
        with httpx.Client(base_url=gw.url, timeout=30.0) as client:
            assert client.get("/api/v1/keys", headers=headers).status_code == 200
            assert client.get("/readyz").status_code == 200

            before = asyncio.run(_send(gw.url, key["key"], 20))
            pg.stop()  # by PID, fast shutdown: every connection is cut
            during = asyncio.run(_send(gw.url, key["key"], 30))
            assert set(before) == set(during) == {200}  # /v1 serves the loaded keys

            resp = client.get("/api/v1/keys", headers=headers)
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["type"] == "service_unavailable" and resp.headers["retry-after"]
            write = client.post("/api/v1/keys", headers=headers, json={"name": "during"})
            assert write.status_code == 503 and write.json()["error"]["type"] == "service_unavailable"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "database is unavailable" in ready.json()["reason"], ready.text
            assert gw.cli("keys", "list", check=False).returncode != 0  # the CLI says so too

            pg.start()
            until_sync(lambda: client.get("/readyz").status_code == 200, "ready again", within=20)
            answered = len(before) + len(during)
            until_sync(lambda: _stored(store_url, key["id"]) == (answered, answered), "usage written", within=20)
            assert client.get("/api/v1/keys", headers=headers).status_code == 200
    finally:
        gw.stop()
    assert _stored(store_url, key["id"]) == (answered, answered)  # shutdown wrote nothing twice
    log = gw.log_tail(400)
    assert "not-needed-but-secret" not in log and "usage is written again" in log


def _serve(tmp_path: Path, store_url: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(tmp_path / "data") | {"AGENTROUTER_STORE_URL": store_url}
    return subprocess.run(
        [*agentrouter_cmd(), "serve", "--port", str(free_port()), "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_a_database_behind_or_unreachable(tmp_path: Path, postgres_servers: PostgresServers) -> None:
    pg = postgres_servers.start()
    pg.sql("CREATE DATABASE fresh")
    behind = _serve(tmp_path, pg.url("fresh", password="s3cret-pw"))
    assert behind.returncode != 0
    assert "behind this AgentRouter" in behind.stderr and "agentrouter migrate" in behind.stderr, behind.stderr
    unreachable = _serve(tmp_path, f"postgresql://agentrouter:s3cret-pw@127.0.0.1:{free_port()}/agentrouter")
    assert unreachable.returncode != 0
    assert "cannot connect to PostgreSQL at postgresql://agentrouter:***@127.0.0.1" in unreachable.stderr
    for proc in (behind, unreachable):
        assert "s3cret-pw" not in proc.stderr + proc.stdout
