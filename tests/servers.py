"""Private real servers on loopback: ``redis-server`` and a PostgreSQL cluster, each
in a directory of its own on a free port, started and stopped by PID (never a system
instance). Used by the tests' fixtures (``tests/services.py``) and by
``scripts/cluster``; no pytest here. ``scripts/install-services`` installs the
programs from Debian.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "PostgresServer",
    "PostgresServers",
    "RedisServer",
    "RedisServers",
    "ServiceMissing",
    "free_port",
]


class ServiceMissing(RuntimeError):
    """The program of a service is not installed (or too old)."""


REDIS_MIN_VERSION = (7, 0)  # Redis Functions
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_server_program() -> str:
    program = shutil.which("redis-server")
    if program is None:
        raise ServiceMissing("redis-server is not installed: run scripts/install-services (scripts/setup --test does)")
    out = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    if found is None or (int(found[1]), int(found[2])) < REDIS_MIN_VERSION:
        raise ServiceMissing(f"the tests need redis-server >= 7.0 (Functions), found: {out.strip()}")
    return program


class RedisServer:
    """One redis-server process; ``kill`` (SIGKILL) and ``start`` again on the same
    port and directory, ``pause``/``resume`` (SIGSTOP/SIGCONT) to make it hang."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.program = redis_server_program()
        self.directory = directory
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            self.process = subprocess.Popen(
                [
                    self.program,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log[-2000:]}")
            if self.ping():
                return
            time.sleep(0.01)  # bounded poll for start-up, not a timing assumption
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no save; then reap it."""
        assert self.process is not None
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class RedisServers:
    """Starts private servers for one test and stops them all at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[RedisServer] = []

    def start(self, *extra: str) -> RedisServer:
        directory = self.root / f"redis-{len(self.started)}"
        directory.mkdir()
        server = RedisServer(directory, *extra)
        self.started.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


# ------------------------------------------------------------------ PostgreSQL

POSTGRES_MIN_VERSION = 13  # DROP DATABASE … WITH (FORCE)
TEMPLATE_DB = "agentrouter_template"


def postgres_bin_dir() -> Path:
    """Debian's ``/usr/lib/postgresql/<major>/bin`` (the newest), else ``postgres`` on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    program = shutil.which("postgres")
    if program is None:
        raise ServiceMissing("PostgreSQL is not installed: run scripts/install-services (scripts/setup --test does)")
    return Path(program).resolve().parent


class PostgresServer:
    """One private PostgreSQL cluster (initdb into a temporary directory) on a loopback
    port, run as the ``postgres`` system user when the tests run as root (PostgreSQL
    refuses root). ``stop`` (fast shutdown) / ``kill`` (SIGKILL) by PID and ``start``
    again on the same port and directory; ``database()`` makes a fresh database from
    a template that is migrated once."""

    def __init__(self, directory: Path) -> None:
        self.bin = postgres_bin_dir()
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        self._count = 0
        self._template_ready = False

    def _run_as(self) -> dict[str, Any]:
        return {"user": self._user, "group": self._user} if self._user else {}

    def init(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self._user:
            shutil.chown(self.directory, self._user, self._user)
            shutil.chown(self.sockets, self._user, self._user)
        out = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            text=True,
            cwd=self.directory,
            **self._run_as(),
        )
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        auth = "postgres" + (f":{password}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            self.process = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    # A test cluster: durability traded for speed (the tests never crash the host).
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                **self._run_as(),
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT * 3
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.directory / "postgres.log").read_text(errors="replace")
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{log[-3000:]}")
            if self.accepts():
                return
            time.sleep(0.02)  # bounded poll for start-up, not a timing assumption
        raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT * 3} s")

    def accepts(self) -> bool:
        out = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-t", "1"],
            capture_output=True,
        )
        return out.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGCONT)
        os.kill(self.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL of the postmaster, as a crash (its backends exit when they notice)."""
        assert self.process is not None
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def sql(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser (psql, autocommit)."""
        args = [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(database)]
        for statement in statements:
            args += ["-c", statement]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")

    def _template(self) -> None:
        if self._template_ready:
            return
        import asyncio

        from agentrouter.store.postgres import PostgresStore

        self.sql(f"CREATE DATABASE {TEMPLATE_DB}")
        asyncio.run(PostgresStore.migrate_url(self.url(TEMPLATE_DB)))
        self._template_ready = True

    def database(self, *, migrated: bool = True) -> str:
        """A new database (migrated: copied from the migrated template); its name."""
        self._count += 1
        name = f"t_{self._count}"
        if migrated:
            self._template()
            self.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        else:
            self.sql(f"CREATE DATABASE {name}")
        return name

    def drop(self, name: str) -> None:
        if self.process is not None and self.process.poll() is None:
            self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PostgresServers:
    """Private clusters of one test (to stop and restart under a running server), each
    in its own temporary directory (the postgres user must reach it: pytest's
    ``tmp_path`` is private to root); stopped and removed at the test's end."""

    def __init__(self) -> None:
        self.started: list[tuple[PostgresServer, tempfile.TemporaryDirectory[str]]] = []

    def start(self) -> PostgresServer:
        directory = tempfile.TemporaryDirectory(prefix="agentrouter-pg-")
        server = PostgresServer(Path(directory.name))
        self.started.append((server, directory))
        server.init()
        server.start()
        return server

    def stop_all(self) -> None:
        for server, directory in self.started:
            server.stop()
            directory.cleanup()
