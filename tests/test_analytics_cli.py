"""``agentrouter usage``: the same figures as the API, for all keys or one, as a table
or ``--json``; bad input exits 2 with a message naming the flag."""

from __future__ import annotations

import time
from pathlib import Path

from agentrouter.datadir import DB_FILE
from agentrouter.store import SqliteStore
from agentrouter.store.models import RequestRecord
from tests.conftest import Cli


async def seed(data_dir: Path, key_id: str, times: list[float], *, status: int = 200, model: str = "gpt-4o") -> None:
    store = await SqliteStore.open(data_dir / DB_FILE)
    try:
        await store.add_requests(
            [
                RequestRecord(
                    key_id=key_id,
                    time=t,
                    model=model,
                    status=status,
                    latency_ms=12.0,
                    input_tokens=7,
                    output_tokens=3,
                    client_ip="10.1.1.1",
                    user_agent="cli-test",
                )
                for t in times
            ]
        )
    finally:
        await store.close()


async def test_usage_of_one_key_and_of_all(cli: Cli, data_dir: Path) -> None:
    prod = cli.json("keys", "create", "--name", "prod")
    other = cli.json("keys", "create", "--name", "other")
    now = time.time()
    await seed(data_dir, prod["id"], [now - 600 + i for i in range(5)])
    await seed(data_dir, prod["id"], [now - 300], status=502, model="claude-3-5-sonnet")
    await seed(data_dir, other["id"], [now - 100, now - 90])

    report = cli.json("usage", prod["id"], "--since", "1h", "--by", "minute")
    assert report["key_id"] == prod["id"] and report["bucket"] == "minute"
    t = report["totals"]
    assert (t["requests"], t["successes"], t["failures_5xx"], t["input_tokens"], t["output_tokens"]) == (
        6,
        5,
        1,
        42,
        18,
    )
    assert t["latency_ms_p50"] == 12.0 and t["distinct_client_ips"] == 1
    assert sum(b["requests"] for b in report["series"]) == 6
    assert {m["model"]: m["requests"] for m in report["models"]} == {"gpt-4o": 5, "claude-3-5-sonnet": 1}

    by_name = cli.json("usage", "prod", "--since", "1h")
    assert by_name["totals"]["requests"] == 6
    everything = cli.json("usage")
    assert everything["key_id"] is None and everything["totals"]["requests"] == 8

    text = cli.run("usage", "prod", "--since", "1h")
    assert text.returncode == 0, text.stderr
    assert f"Usage of key {prod['id']} (prod)" in text.stdout
    assert "6 (5 ok, 0 4xx, 1 5xx)" in text.stdout
    assert "claude-3-5-sonnet" in text.stdout and "p50 12.0 ms" in text.stdout


def test_usage_bad_input(cli: Cli) -> None:
    proc = cli.run("usage", "--since", "last tuesday")
    assert proc.returncode == 2 and "--since" in proc.stderr
    proc = cli.run("usage", "--since", "30d", "--by", "minute")
    assert proc.returncode == 2 and "--by" in proc.stderr
    proc = cli.run("usage", "--by", "week")
    assert proc.returncode == 2
    proc = cli.run("usage", "key_doesnotexist")
    assert proc.returncode == 1 and "no key" in proc.stderr
    proc = cli.run("usage", "--since", "1h", "--until", "2h")
    assert proc.returncode == 2 and "--until" in proc.stderr
    proc = cli.run("usage", "nokey", "--json")
    assert proc.returncode == 1 and '"error"' in proc.stdout


async def test_usage_reads_the_data_dir_given(cli: Cli, data_dir: Path, tmp_path: Path) -> None:
    key = cli.json("keys", "create", "--name", "elsewhere")
    await seed(data_dir, key["id"], [time.time() - 60])
    cli.env["AGENTROUTER_DATA_DIR"] = str(tmp_path / "empty")
    report = cli.json("--data-dir", str(data_dir), "usage", "elsewhere")
    assert report["totals"]["requests"] == 1
