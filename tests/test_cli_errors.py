"""The real CLI against a broken data directory: a one-line message that says what to
do and an exit status, never a traceback (``agentrouter.cli.main`` maps the whole
``AgentRouterError`` family in one place)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentrouter.core import state_error
from tests.conftest import Cli


def failed(proc: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("agentrouter: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return proc.stderr


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cli = Cli(blocker)
    failed(cli.run("keys", "list"), 1, f"cannot use the data directory {blocker}", "--data-dir")
    failed(cli.run("--data-dir", str(blocker / "sub"), "keys", "list"), 1, "cannot use the data directory")


def test_a_damaged_database(cli: Cli, data_dir: Path) -> None:
    assert cli.run("keys", "list").returncode == 0
    (data_dir / "agentrouter.db").write_bytes(b"this is not sqlite" * 100)
    for name in ("agentrouter.db-wal", "agentrouter.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    failed(cli.run("keys", "list"), 1, "is damaged or not an AgentRouter database", "restore it from a backup")
    proc = cli.run("keys", "create", "--json")  # scripts get the message as JSON
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "damaged" in json.loads(proc.stdout)["error"]


def test_a_damaged_limiter_region(cli: Cli, data_dir: Path) -> None:
    assert cli.run("keys", "create").returncode == 0
    region = data_dir / "limiter.shm"
    region.write_bytes(b"\xff" * region.stat().st_size)
    message = failed(cli.run("keys", "list"), 1, str(region), "rebuilt from the database")
    assert "remove" in message
    region.unlink()  # what the message says to do: the region is rebuilt, the key works again
    proc = cli.run("keys", "list")
    assert proc.returncode == 0, proc.stderr


def test_a_limiter_region_of_another_size(cli: Cli) -> None:
    assert cli.run("keys", "list").returncode == 0
    cli.env["AGENTROUTER_LIMITER_SLOTS"] = "100"
    failed(cli.run("keys", "list"), 1, "limiter_slots")
    cli.env["AGENTROUTER_LIMITER_SLOTS"] = "0"
    failed(cli.run("keys", "list"), 2, "bad configuration: server.limiter_slots", "AGENTROUTER_LIMITER_SLOTS")


@pytest.mark.slow
def test_a_locked_database(cli: Cli, data_dir: Path) -> None:
    assert cli.run("keys", "list").returncode == 0
    holder = sqlite3.connect(data_dir / "agentrouter.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # a stuck writer (the store waits 10 s for it)
        failed(cli.run("keys", "create"), 1, "is locked by another process", "try again")
    finally:
        holder.close()
    assert cli.run("keys", "create").returncode == 0


def test_a_secret_readable_by_others(cli: Cli, data_dir: Path) -> None:
    assert cli.run("keys", "list").returncode == 0
    (data_dir / "secret").chmod(0o644)
    failed(cli.run("keys", "list"), 1, "chmod 600")


def test_serve_says_what_is_wrong_with_its_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "agentrouter.cli", "--data-dir", str(blocker), "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    failed(proc, 1, "cannot start: cannot use the data directory")


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (sqlite3.OperationalError("attempt to write a readonly database"), "is read-only for this user"),
        (sqlite3.OperationalError("unable to open database file"), "readable and writable by this user"),
        (sqlite3.OperationalError("database is locked"), "is locked by another process"),
        (sqlite3.DatabaseError("database disk image is malformed"), "damaged"),
        (PermissionError(13, "Permission denied", "/srv/data/secret"), "/srv/data/secret: Permission denied"),
    ],
)
def test_what_each_state_failure_is_told(error: Exception, needle: str) -> None:
    message = str(state_error(error, Path("/srv/data")))
    assert needle in message, message


def test_metadata_too_deep_for_the_cli(cli: Cli) -> None:
    for metadata in ('{"x": ' + "[" * 2000 + "]" * 2000 + "}", '{"x": ' + "[" * 40 + "]" * 40 + "}"):
        proc = cli.run("keys", "create", "--metadata", metadata)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "metadata" in proc.stderr and "nested" in proc.stderr
    assert cli.json("keys", "list") == []
