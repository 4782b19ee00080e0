"""The management API mounted in the real server (``agentrouter serve --workers 2``):
``/api`` beside ``/v1`` on one port (the console beside both), and the monitor run by one
worker at a time (the lease in the store)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agentrouter.datadir import DB_FILE
from agentrouter.store import SqliteStore
from tests.e2e.conftest import Gateway, write_config
from tests.upstream_fake import FakeUpstream
from tests.waiting import until_async

LEASE_TAKEN = re.compile(r"monitor: this process \((?P<holder>[^)]*)\) holds the 'monitor' lease")


def test_the_api_is_served_beside_v1(gateway: Gateway, key: dict[str, Any]) -> None:
    admin = gateway.cli_json("keys", "create", "--name", "e2e-admin", "--scope", "manage")
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        doc = http.get("/api/openapi.json")
        assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.1")
        assert http.get("/api/docs").status_code == 200
        shown = http.get(f"/api/v1/keys/{key['id']}", headers={"authorization": f"Bearer {admin['key']}"})
        assert shown.status_code == 200 and shown.json()["id"] == key["id"]
        # Each kind of key is refused on the other's API.
        refused = http.get("/api/v1/keys", headers={"x-api-key": key["key"]})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
        chat = http.post(
            "/v1/chat/completions",
            headers={"x-api-key": admin["key"]},
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert chat.status_code == 403
        # /v1 itself is no route: 404, JSON. The rest outside /v1 and /api is the console's.
        resp = http.get("/v1")
        assert resp.status_code == 404 and resp.headers["content-type"] == "application/json"
        assert resp.json()["error"]["message"]
        resp = http.get("/favicon.ico")
        assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")
        resp = http.get("/")
        assert resp.status_code == 303 and resp.headers["location"] == "/sign-in"


def test_an_sdk_missing_v1_in_its_base_url_is_told_so(gateway: Gateway, key: dict[str, Any]) -> None:
    client = openai.OpenAI(api_key=key["key"], base_url=gateway.url, max_retries=0, timeout=30.0)
    try:
        with pytest.raises(openai.NotFoundError) as exc:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    finally:
        client.close()
    assert "did you mean '/v1/chat/completions'" in str(exc.value)


@pytest.mark.slow
async def test_one_worker_runs_the_monitor(tmp_path: Path, fake: FakeUpstream, down_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    gw = Gateway(data_dir, write_config(tmp_path / "agentrouter.toml", fake.base_url, down_url), workers=2)
    gw.env["AGENTROUTER_MONITOR_INTERVAL"] = "0.2"
    await asyncio.to_thread(gw.start)
    try:
        holders: set[str] = set()
        expiries: set[float] = set()

        async def fifteen_runs() -> bool:  # the lease is renewed at each run of the holder
            for holder, expires_at in await leases(data_dir / DB_FILE):
                holders.add(holder)
                expiries.add(expires_at)
            return len(expiries) >= 15

        await until_async(fifteen_runs, "15 runs of the monitor", within=30)
        taken = LEASE_TAKEN.findall(gw.log_path.read_text(errors="replace"))
    finally:
        returncode = await asyncio.to_thread(gw.stop)
    assert returncode == 0, gw.log_tail()
    assert len(taken) == 1, gw.log_tail()  # one worker took the lease, and kept it
    assert holders == set(taken), (holders, taken)
    assert await leases(data_dir / DB_FILE) == []  # released at shutdown, while the store was open


async def leases(db: Path) -> list[tuple[str, float]]:
    """The monitor's lease: (holder, expiry), or nothing."""
    store = await SqliteStore.open(db)
    try:
        rows = await store._db.execute_fetchall("SELECT holder, expires_at FROM leases WHERE name = 'monitor'")
        return [(r[0], float(r[1])) for r in rows]
    finally:
        await store.close()
