"""Real servers for the tests, each a private instance on a free loopback port in a
temporary directory, started by the tests and stopped by PID (never a system
instance). ``scripts/install-services`` (run by ``scripts/setup --test``)
installs the programs.

Fixtures: ``redis_server`` (one per session; ``redis_url`` flushes it before each
test) and ``redis_servers`` (a factory for instances a test may kill and restart).
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
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer"]

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
        pytest.fail("redis-server is not installed: run scripts/install-services (scripts/setup --test does)")
    out = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    if found is None or (int(found[1]), int(found[2])) < REDIS_MIN_VERSION:
        pytest.fail(f"the tests need redis-server >= 7.0 (Functions), found: {out.strip()}")
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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="agentrouter-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, emptied (functions are kept) before the test."""
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as s:
        s.sendall(b"FLUSHALL SYNC\r\n")
        assert s.recv(16).startswith(b"+OK")
    return redis_server.url


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


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    servers = RedisServers(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()
