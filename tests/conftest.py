"""Shared fixtures: a private data directory and an opened Core on a fake clock."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentrouter._core import FakeClock
from agentrouter.config import Settings, load_settings
from agentrouter.core import Core

# The fixtures of the gateway tests (``gw``, ``gw_clock``, ``upstream``) and of the
# management-API tests (``api_server``, ``admin``, ``http``), for every test module:
# registered as plugins, so a module asks for them by name and imports only helpers.
# tests.services starts private real servers (Redis) for the tests that need them;
# tests.browser drives Debian's Chromium against a real server (the console's tests);
# tests.hang_guard picks pytest-timeout's method for tests that run on uvloop.
pytest_plugins = [
    "tests.services",
    "tests.gateway_fixtures",
    "tests.api_fixtures",
    "tests.hang_guard",
    "tests.browser",
]

SECRET = "test-secret-0123456789abcdef0123456789abcdef"


# The server runs its workers on uvloop (``server.event_loop``). The tests of the code
# that drives the loop's network and process layers directly (the upstream client,
# TLS, the usage writer's child process) run on both loops; the others on asyncio's.
BOTH_LOOPS = frozenset(
    {
        "tests.test_gateway_upstream",
        "tests.test_gateway_upstream_timer",
        "tests.test_gateway_upstream_strict",
        "tests.test_gateway_upstream_resend",
        "tests.test_gateway_tls",
        "tests.test_gateway_client",
        "tests.test_usage_writer",
        "tests.test_limits_resp",
    }
)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in BOTH_LOOPS:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


# The store backends a test runs on. A module (or test) marked
# ``@pytest.mark.store_backends`` runs once per backend, the "store_backend" parameter
# (module-scoped, so a module's server fixtures are made once per backend); the
# fixtures ``store_url``, ``core``, ``cli`` and ``api_server`` follow it. Unmarked
# tests run on SQLite only.
STORE_BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("store_backends")
    if marker is not None and "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", marker.args or STORE_BACKENDS, scope="module")


@pytest.fixture(scope="module")
def store_backend() -> str:
    return "sqlite"


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    """None (the SQLite file in the data directory), or a fresh migrated PostgreSQL
    database of the session's private cluster."""
    if store_backend == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


def settings_on(data_dir: Path, *, secret: str | None = SECRET, store_url: str | None = None, **env: str) -> Settings:
    """The settings of a server on ``data_dir`` with ``secret`` (None: the data
    directory's secret file), ``store_url`` (None: SQLite) and ``AGENTROUTER_*``
    values, as ``load_settings`` reads them."""
    values = {"AGENTROUTER_DATA_DIR": str(data_dir), **env}
    if secret is not None:
        values["AGENTROUTER_SECRET"] = secret
    if store_url is not None:
        values["AGENTROUTER_STORE_URL"] = store_url
    return load_settings(env=values)


async def open_core(
    data_dir: Path, *, secret: str | None = SECRET, clock: FakeClock | None = None, store_url: str | None = None
) -> Core:
    """``Core.from_settings`` on ``data_dir`` (the one way every process opens it)."""
    return await Core.from_settings(settings_on(data_dir, secret=secret, store_url=store_url), clock=clock)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def core(data_dir: Path, clock: FakeClock, store_url: str | None) -> AsyncIterator[Core]:
    c = await open_core(data_dir, clock=clock, store_url=store_url)
    try:
        yield c
    finally:
        await c.close()


class Cli:
    """Runs the real ``agentrouter`` command in a subprocess against one data dir."""

    def __init__(self, data_dir: Path, store_url: str | None = None) -> None:
        self.env = {**os.environ, "AGENTROUTER_DATA_DIR": str(data_dir)}
        self.env.pop("AGENTROUTER_SECRET", None)
        self.env.pop("AGENTROUTER_STORE_URL", None)
        if store_url is not None:
            self.env["AGENTROUTER_STORE_URL"] = store_url

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentrouter.cli", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        proc = self.run(*args, "--json")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return msgspec.json.decode(proc.stdout)


@pytest.fixture
def cli(data_dir: Path, store_url: str | None) -> Cli:
    return Cli(data_dir, store_url)
