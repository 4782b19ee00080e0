"""Real servers for the tests, each a private instance on a free loopback port in a
temporary directory, started by the tests and stopped by PID (never a system
instance). ``scripts/install-services`` (run by ``scripts/setup --test``)
installs the programs.

Fixtures: ``redis_server`` (one per session; ``redis_url`` flushes it before each
test) and ``redis_servers`` (a factory for instances a test may kill and restart);
``postgres_server`` (one cluster per session, started when first needed;
``postgres_url`` is a fresh migrated database per test, a copy of a template
migrated once) and ``postgres_servers`` (clusters a test may stop and restart). The
server classes themselves are in ``tests/servers.py`` (``scripts/cluster`` uses them too).
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import PostgresServer, PostgresServers, RedisServer, RedisServers, ServiceMissing, free_port

__all__ = ["PostgresServer", "PostgresServers", "RedisServer", "RedisServers", "ServiceMissing", "free_port"]


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


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServers]:
    servers = RedisServers(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private cluster per test session, started when a test first needs it."""
    with tempfile.TemporaryDirectory(prefix="agentrouter-pg-") as directory:
        server = PostgresServer(Path(directory))
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh migrated database of the session's cluster, dropped after the test."""
    name = postgres_server.database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop(name)


@pytest.fixture
def postgres_servers() -> Iterator[PostgresServers]:
    servers = PostgresServers()
    try:
        yield servers
    finally:
        servers.stop_all()
