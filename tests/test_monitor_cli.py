"""``agentrouter alerts`` (list, filter, ``--json``) and ``agentrouter alerts ack ID``."""

from __future__ import annotations

import time
from pathlib import Path

from agentrouter.datadir import DB_FILE
from agentrouter.store import SqliteStore
from tests.conftest import Cli


async def seed_alerts(data_dir: Path, key_id: str) -> list[str]:
    store = await SqliteStore.open(data_dir / DB_FILE)
    try:
        a = store
        now = time.time()
        made = [
            await a.record_alert(
                key_id=key_id,
                kind="new_ip",
                subject="192.0.2.9",
                now=now - 30,
                cooldown=0,
                evidence={
                    "ip": "192.0.2.9",
                    "network": "192.0.2.9",
                    "requests": 4,
                    "known_networks": 2,
                    "known_sample": [],
                    "first_seen": now - 40,
                },
            ),
            await a.record_alert(
                key_id=key_id,
                kind="failure_rate",
                subject="1",
                now=now - 20,
                cooldown=0,
                evidence={
                    "requests": 40,
                    "failures": 30,
                    "failures_4xx": 30,
                    "failures_5xx": 0,
                    "rate": 0.75,
                    "baseline_rate": 0.01,
                },
            ),
            await a.record_alert(
                key_id=key_id,
                kind="unusual_hour",
                subject="2",
                now=now - 10,
                cooldown=0,
                evidence={"requests": 9, "hour_of_day_utc": 3, "usual_hours_utc": [8, 9, 10, 16]},
            ),
        ]
        return [m.id for m in made if m is not None]
    finally:
        await store.close()


async def test_list_filter_and_acknowledge(cli: Cli, data_dir: Path) -> None:
    key = cli.json("keys", "create", "--name", "prod")
    ids = await seed_alerts(data_dir, key["id"])
    assert len(ids) == 3

    listed = cli.json("alerts")
    assert [a["id"] for a in listed] == list(reversed(ids))  # newest first
    assert {a["kind"] for a in listed} == {"new_ip", "failure_rate", "unusual_hour"}
    assert all(a["acknowledged_at"] is None for a in listed)
    assert [a["kind"] for a in cli.json("alerts", "--kind", "new_ip")] == ["new_ip"]
    assert cli.json("alerts", "--key", "key_other") == []

    text = cli.run("alerts")
    assert text.returncode == 0
    assert "first use from 192.0.2.9" in text.stdout
    assert "30/40 failed (75%; 30 4xx, 0 5xx), usually 1%" in text.stdout
    assert "usually active 08-11h, 16h UTC" in text.stdout

    acked = cli.json("alerts", "ack", ids[0])
    assert acked["id"] == ids[0] and acked["acknowledged_at"] is not None
    proc = cli.run("alerts", "ack", ids[1])
    assert proc.returncode == 0 and f"Acknowledged alert {ids[1]}" in proc.stdout
    assert [a["id"] for a in cli.json("alerts")] == [ids[2]]
    assert len(cli.json("alerts", "--all")) == 3


def test_alerts_bad_input(cli: Cli) -> None:
    assert cli.run("alerts").stdout.strip() == "No open alerts."
    proc = cli.run("alerts", "ack", "alr_nope")
    assert proc.returncode == 1 and "no alert with id" in proc.stderr
    assert cli.run("alerts", "--kind", "bogus").returncode == 2
    assert cli.run("alerts", "--limit", "0").returncode == 2
