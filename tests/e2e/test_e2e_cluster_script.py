"""``scripts/cluster`` starts the three instances on one PostgreSQL and one Redis,
says where they are, and stops everything it started on SIGINT (Ctrl-C) and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import async_client, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _read_until(proc: subprocess.Popen[bytes], marker: str, within: float, errors: Path) -> str:
    """The script's output up to ``marker`` (fails after ``within`` s, or if it exits)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker.encode() not in out:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise AssertionError(f"no {marker!r} from scripts/cluster: {out!r}\n{errors.read_text()}")
            if sel.select(timeout=left):
                out += os.read(fd, 65536)
    return out.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_scripts_cluster_starts_three_instances_and_stops_everything(how: signal.Signals, tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
    env |= {"AGENTROUTER_CLUSTER_NO_SETUP": "1", "AGENTROUTER_CLUSTER_PYTHON": sys.executable}
    errors = tmp_path / "stderr"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "cluster"), "--ports", ",".join(map(str, ports))],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    pids: list[int] = []
    root: Path | None = None
    try:
        out = _read_until(proc, "Stop: Ctrl-C", 90, errors)
        pids = [int(p) for p in re.findall(r"\(pid (\d+)", out)]
        assert len(pids) == 5, out  # three instances, PostgreSQL, Redis
        urls = re.findall(r"instance \d: (http://127\.0\.0\.1:\d+)", out)
        assert urls == [f"http://127.0.0.1:{p}" for p in ports], out
        assert re.search(rf"http://127\.0\.0\.1:{ports[0]}/setup\?token=\S+", out), out
        env_file = Path(re.search(r"\. (\S+cluster\.env)", out)[1])  # type: ignore[index]
        root = env_file.parent
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        settings = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
        assert {"AGENTROUTER_STORE_URL", "AGENTROUTER_LIMITER_URL", "AGENTROUTER_SECRET"} <= set(settings)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentrouter.cli",
                "keys",
                "create",
                "--requests",
                "4",
                "--interval",
                "3600",
                "--json",
            ],
            env={**env, **settings},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = json.loads(made.stdout)["key"]

        async def spread() -> Counter[int]:
            async def one(url: str) -> int:
                async with async_client() as client:
                    resp = await client.post(
                        url + "/v1/chat/completions",
                        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    return resp.status_code

            return Counter(await asyncio.gather(*(one(u) for u in urls * 3)))

        assert asyncio.run(spread()) == {200: 4, 429: 5}  # one limit for the three instances
    finally:
        proc.send_signal(how)
        code = proc.wait(timeout=90)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0, errors.read_text()
    assert "cluster: stopped" in errors.read_text()
    assert [p for p in pids if _alive(p)] == []
    assert root is not None and not root.exists()
