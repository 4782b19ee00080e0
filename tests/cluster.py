"""``scripts/cluster``: the multi-host setup of ``tests/e2e/test_e2e_multihost.py`` on
this machine, for someone to try: a private PostgreSQL (run as the ``postgres``
user when started as root) and a private redis-server in temporary directories,
``agentrouter migrate`` once, then three ``agentrouter serve --workers 2`` instances
on ports 8081–8083, each on a data directory of its own and all with one secret.
It prints the URLs, the first admin's setup link, a file of settings for the CLI
and how to stop; Ctrl-C (SIGINT) or SIGTERM stops everything it started, by PID,
and removes the temporary directories.

The servers are ``tests/servers.py``'s, the same the tests start.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.servers import PostgresServer, PostgresServers, RedisServer, RedisServers

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SETUP_LINK = re.compile(r"(https?://\S+/setup\S*)")


def agentrouter() -> list[str]:
    """This interpreter's ``agentrouter`` console script, else the module."""
    script = Path(sys.executable).with_name("agentrouter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentrouter.cli"]


class Instance:
    """One ``agentrouter serve`` on a data directory of its own, in a session of its
    own (a Ctrl-C in the terminal reaches this script, which stops it by PID)."""

    def __init__(self, number: int, root: Path, port: int, workers: int, env: dict[str, str]) -> None:
        self.number = number
        self.port = port
        self.workers = workers
        self.directory = root / f"instance{number}"
        self.data_dir = self.directory / "data"
        self.data_dir.mkdir(parents=True)
        self.log_path = self.directory / "serve.log"
        self.env = env | {"AGENTROUTER_DATA_DIR": str(self.data_dir)}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*agentrouter(), *serve],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"instance {self.number} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"instance {self.number} was not ready within {START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.1)  # bounded poll for start-up

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def setup_link(self) -> str | None:
        found = SETUP_LINK.findall(self.log_path.read_text(errors="replace"))
        return found[-1] if found else None

    def stop(self) -> None:
        """SIGTERM (in-flight requests finish), then SIGKILL of its group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Cluster:
    def __init__(self, ports: Sequence[int], workers: int) -> None:
        self.ports = list(ports)
        self.workers = workers
        self.root = Path(tempfile.mkdtemp(prefix="agentrouter-cluster-"))
        self.postgres = PostgresServers()  # its own directory: the postgres user must reach it
        self.redis = RedisServers(self.root)
        self.instances: list[Instance] = []
        self.pg: PostgresServer | None = None
        self.rs: RedisServer | None = None
        self.env_file = self.root / "cluster.env"

    def start(self) -> None:
        self.pg = self.postgres.start()
        self.pg.sql("CREATE DATABASE agentrouter")
        self.rs = self.redis.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
        settings = {
            "AGENTROUTER_STORE_URL": self.pg.url("agentrouter"),
            "AGENTROUTER_LIMITER_URL": self.rs.url,
            "AGENTROUTER_SECRET": secrets.token_urlsafe(32),  # one secret: a key verifies everywhere
        }
        env |= settings | {"PYTHONUNBUFFERED": "1"}
        operator = self.root / "operator"
        operator.mkdir()
        self.env_file.write_text(
            "".join(f"export {k}={v}\n" for k, v in {**settings, "AGENTROUTER_DATA_DIR": str(operator)}.items())
        )
        self.env_file.chmod(0o600)
        migrated = subprocess.run(
            [*agentrouter(), "migrate"],
            env=env | {"AGENTROUTER_DATA_DIR": str(operator)},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"agentrouter migrate failed:\n{migrated.stderr}")
        self.instances = [Instance(i + 1, self.root, p, self.workers, env) for i, p in enumerate(self.ports)]
        # Every start makes a new first-admin setup link (the previous one stops working):
        # the others first, instance 1 last, so the link it prints is the live one.
        rest, first = self.instances[1:], self.instances[0]
        for instance in rest:
            instance.start()
        for instance in rest:
            instance.wait_ready()
        first.start()
        first.wait_ready()

    def describe(self) -> str:
        assert self.pg is not None and self.rs is not None
        n = len(self.instances)
        lines = [
            (
                f"AgentRouter cluster: {n} instances × {self.workers} workers, one PostgreSQL, one Redis "
                f"(loopback only; files in {self.root})"
            ),
            "",
        ]
        for inst in self.instances:
            assert inst.process is not None
            lines.append(f"  instance {inst.number}: {inst.url}   (pid {inst.process.pid}, log {inst.log_path})")
        lines += [
            f"  PostgreSQL: {self.pg.url('agentrouter')}   (pid {self.pg.pid})",
            f"  Redis:      {self.rs.url}   (pid {self.rs.pid})",
            "",
        ]
        link = self.instances[0].setup_link()
        if link:
            lines += ["Create the first admin (the link works once):", "", f"    {link}", ""]
        lines += [
            "The CLI with the cluster's settings (store, limiter, secret; the file is private):",
            "",
            f"    . {self.env_file}",
            f"    {' '.join(agentrouter())} keys create --name try --requests 5 --interval 60",
            f"    curl {self.instances[-1].url}/v1/chat/completions -H 'Authorization: Bearer sk-ar-…' \\",
            "      -H 'Content-Type: application/json' \\",
            """      -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}'""",
            "",
            "  (a key made anywhere works on every instance at once; its limit is one count for all of them;",
            "   a deleted key is refused everywhere on the next request)",
            "",
            (
                f"Stop: Ctrl-C here (or kill -TERM {os.getpid()}): everything started is stopped by PID "
                "and the files are removed."
            ),
        ]
        return "\n".join(lines)

    def stop(self) -> None:
        for inst in self.instances:
            try:
                inst.stop()
            except Exception as exc:  # stop the rest all the same
                print(f"cluster: stopping instance {inst.number}: {exc}", file=sys.stderr)
        self.redis.stop_all()
        self.postgres.stop_all()
        shutil.rmtree(self.root, ignore_errors=True)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ports", default="8081,8082,8083", help="the instances' ports, comma-separated (default 8081,8082,8083)"
    )
    parser.add_argument("--workers", type=int, default=2, help="workers per instance (default 2)")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",") if p.strip()]
    cluster = Cluster(ports, args.workers)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        cluster.start()
        print(cluster.describe(), flush=True)
        while True:
            signal.pause()
    except _Stop:
        print("\ncluster: stopping…", file=sys.stderr, flush=True)
        return 0
    except Exception as exc:  # said plainly, then everything stopped
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
        print("cluster: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
