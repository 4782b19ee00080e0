"""Fixtures for the management-API tests: the real API served by Granian on loopback.

``ApiServer`` runs ``python -m granian --interface asgi agentrouter.api.devserver:app``
with two workers in a subprocess, against a private data directory; the test process
reaches the same store directly (the SQLite file, or the PostgreSQL database when the
module runs on ``store_backend`` "postgres") to seed request logs and alerts, and through the real CLI to make the first
management key, exactly as an operator would.

The fixtures (``api_server``, ``admin``, ``http``) are a plugin registered in
``tests/conftest.py``: a test asks for them by name; import only the helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from agentrouter.config import load_settings
from agentrouter.store import Store, open_store
from agentrouter.store.models import RequestRecord
from tests.services import PostgresServer
from tests.waiting import until_sync

SECRET = "api-test-secret-0123456789abcdef0123456789"
START_TIMEOUT = 45.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, extra: dict[str, str] | None = None, *, secret: str | None = SECRET) -> dict[str, str]:
    """The environment of the server and the CLI; ``secret=None`` uses the data
    directory's own secret file (to share a data directory with a gateway)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
    env.update({"AGENTROUTER_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    if secret is not None:
        env["AGENTROUTER_SECRET"] = secret
    env.update(extra or {})
    return env


class ApiServer:
    """The management API under Granian, and the CLI and store bound to its data dir."""

    def __init__(
        self, data_dir: Path, *, workers: int = 2, env: dict[str, str] | None = None, secret: str | None = SECRET
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.env = server_env(data_dir, env, secret=secret)
        self.log_path = data_dir.parent / f"api-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> ApiServer:
        # Create the database, its migrations and the limiter region once, before the workers.
        self.cli("keys", "list")
        cmd = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            "agentrouter.api.devserver:app",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/api/openapi.json", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the API server did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.1)
        # Every worker up: a burst of fresh connections must all be answered.
        for _ in range(4 * self.workers):
            httpx.get(self.url + "/api/openapi.json", timeout=10.0)
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    # -- the operator's side ---------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentrouter.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def cli_json(self, *args: str) -> Any:
        proc = self.cli(*args, "--json")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return json.loads(proc.stdout)

    def create_key(self, *args: str) -> dict[str, Any]:
        return self.cli_json("keys", "create", *args)  # type: ignore[no-any-return]

    def with_store(self, op: Callable[[Store], Awaitable[T]]) -> T:
        """``op`` on the server's store (its SQLite file or its PostgreSQL database)."""

        async def main() -> T:
            store = await open_store(load_settings(env=self.env))
            try:
                return await op(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def add_requests(self, records: Sequence[RequestRecord]) -> None:
        self.with_store(lambda s: s.add_requests(records))

    def monitor_lease_expiry(self) -> float | None:
        """When the monitor's lease expires; every run of the monitor renews it."""

        async def read(store: Store) -> float | None:
            lease = await store.lease("monitor")
            return None if lease is None else lease[1]

        return self.with_store(read)

    def wait_for_monitor_runs(self, n: int) -> None:
        """Return once ``n`` more runs of the monitor have started (``n - 1`` of them,
        at least, ran to their end): its lease was renewed ``n`` times."""
        renewals = [self.monitor_lease_expiry()]

        def renewed() -> bool:
            expiry = self.monitor_lease_expiry()
            if expiry != renewals[-1]:
                renewals.append(expiry)
            return len(renewals) > n

        until_sync(renewed, f"{n} runs of the monitor", within=30, poll=0.05)


def start_api_server(tmp: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> ApiServer:
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    return ApiServer(data_dir, workers=workers, env=env).start()


def store_env(store_backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """``AGENTROUTER_STORE_URL`` of a fresh database when the backend is PostgreSQL."""
    if store_backend != "postgres":
        return {}
    pg: PostgresServer = request.getfixturevalue("postgres_server")
    return {"AGENTROUTER_STORE_URL": pg.url(pg.database())}


@pytest.fixture(scope="module")
def api_server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: str, request: pytest.FixtureRequest
) -> Iterator[ApiServer]:
    # The monitor runs every half second so a test can watch it raise an alert.
    server = start_api_server(
        tmp_path_factory.mktemp("api"),
        env={"AGENTROUTER_MONITOR_INTERVAL": "0.5", **store_env(store_backend, request)},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(api_server: ApiServer) -> dict[str, Any]:
    """A management key (no rate limit), made with the CLI."""
    return api_server.create_key("--name", "admin", "--scope", "manage")


@pytest.fixture
def http(api_server: ApiServer, admin: dict[str, Any]) -> Iterator[httpx.Client]:
    """A client that sends the admin key as a Bearer token."""
    with httpx.Client(
        base_url=api_server.url, timeout=30.0, headers={"authorization": f"Bearer {admin['key']}"}
    ) as client:
        yield client


def record(
    key_id: str,
    t: float,
    *,
    status: int = 200,
    model: str | None = "gpt-4o",
    latency: float = 20.0,
    tin: int = 10,
    tout: int = 4,
    ip: str | None = "10.9.8.7",
) -> RequestRecord:
    return RequestRecord(
        key_id=key_id,
        time=t,
        model=model,
        status=status,
        latency_ms=latency,
        input_tokens=tin,
        output_tokens=tout,
        client_ip=ip,
        user_agent="api-test",
    )


def api_error(resp: httpx.Response, status: int, type_: str, field: str | None = None) -> dict[str, Any]:
    """Assert the one error shape (status, type, the field at fault); return ``error``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["type"] == type_, err
    assert isinstance(err["message"], str) and err["message"]
    if field is not None:
        assert err["field"] == field, err
    return err  # type: ignore[no-any-return]
