"""Fixtures for the end-to-end tests.

One fake upstream (``tests/upstream_fake.py``, in a thread of the test process) and
one real gateway for the whole session: ``agentrouter serve --workers 2`` started as
a subprocess on a free loopback port, with its own data directory and a config file
whose providers point at the fake. Keys are made with the real CLI
(``agentrouter keys create --json``) against the same data directory, exactly as an
operator would, while the server runs. Tests that must stop a gateway (SIGTERM under
load) start their own with :func:`start_gateway`.

Provider routing in the config (first match wins; the fake picks its behaviour by
model name, see ``FakeUpstream.on``):

=================================  ==========================  =========================
models                             provider                    upstream
=================================  ==========================  =========================
``slow-gpt*``                      openai, 1 s read timeout    the fake
``slow-claude*``                   anthropic, 1 s read timeout the fake
``down-gpt*``                      openai                      a refused loopback port
``down-claude*``                   anthropic                   a refused loopback port
``gpt-4o``, ``gpt-*``,             openai                      the fake
``text-embedding-*``
``claude-*``                       anthropic                   the fake
``raw-gpt*``                       openai                      the fake's raw listener
``raw-claude*``                    anthropic                   the fake's raw listener
=================================  ==========================  =========================

(The raw listener writes the bytes a test sets with ``FakeUpstream.raw``: the
misbehaving upstreams of ``test_e2e_upstream_misbehaving.py``.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.services import PostgresServer
from tests.upstream_fake import FakeUpstream, refused_port

UPSTREAM_OPENAI_KEY = "sk-upstream-openai-0123456789"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-0123456789"
SLOW_TIMEOUT = 1.0
"""Seconds the slow providers wait for the upstream before answering 504."""
MAX_BODY_BYTES = 1024 * 1024
"""The request body limit in the test config (the default, 32 MiB, is costly to exceed)."""
BODY_IDLE_TIMEOUT = 1.5
BODY_TIMEOUT = 4.0
"""The body timeouts in the test config (the defaults, 30 s and 300 s, are long to wait for)."""
CORS_ORIGIN = "https://app.example.com"
"""The one browser origin the test config allows."""
START_TIMEOUT = 45.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
BIG_LIMIT = ("100000", "60")
"""A limit no test reaches, so every key has X-RateLimit-* headers to check."""


_TLS = ssl.create_default_context()


def async_client(**options: Any) -> httpx.AsyncClient:
    """A client of its own (its own connections) that costs nothing to make.

    httpx builds a TLS context per client by default (~40 ms of CPU); tests that open
    dozens of clients at once share one, or their timing would be the CA store's.
    """
    options.setdefault("timeout", 30.0)
    return httpx.AsyncClient(verify=_TLS, **options)


def agentrouter_cmd() -> list[str]:
    """The installed ``agentrouter`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("agentrouter")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "agentrouter.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
    env["AGENTROUTER_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_config(
    path: Path, fake_url: str, down_url: str, *, slow_timeout: float = SLOW_TIMEOUT, raw_url: str | None = None
) -> Path:
    """The gateway config used by the e2e tests (field names: ``agentrouter/config.py``)."""

    def provider(name: str, kind: str, base_url: str, key: str, models: list[str], timeout: float | None) -> str:
        lines = [
            "[[providers]]",
            f'name = "{name}"',
            f'type = "{kind}"',
            f'base_url = "{base_url}"',
            f'api_key = "{key}"',
            "models = [" + ", ".join(f'"{m}"' for m in models) + "]",
        ]
        if timeout is not None:
            lines.append(f"read_timeout = {timeout}")
        return "\n".join(lines) + "\n"

    # base_url names the API root with its version, for both types (agentrouter/config.py).
    base = fake_url + "/v1"
    down = down_url + "/v1"
    raw = (raw_url or down_url) + "/v1"
    text = "\n".join(
        [
            "[server]",
            f"max_body_bytes = {MAX_BODY_BYTES}",
            f"body_idle_timeout = {BODY_IDLE_TIMEOUT}",
            f"body_timeout = {BODY_TIMEOUT}",
            f'cors_allow_origins = ["{CORS_ORIGIN}"]',
            "",
            provider("slow-openai", "openai", base, UPSTREAM_OPENAI_KEY, ["slow-gpt*"], slow_timeout),
            provider("slow-anthropic", "anthropic", base, UPSTREAM_ANTHROPIC_KEY, ["slow-claude*"], slow_timeout),
            provider("down-openai", "openai", down, UPSTREAM_OPENAI_KEY, ["down-gpt*"], None),
            provider("down-anthropic", "anthropic", down, UPSTREAM_ANTHROPIC_KEY, ["down-claude*"], None),
            provider("raw-openai", "openai", raw, UPSTREAM_OPENAI_KEY, ["raw-gpt*"], slow_timeout),
            provider("raw-anthropic", "anthropic", raw, UPSTREAM_ANTHROPIC_KEY, ["raw-claude*"], slow_timeout),
            provider("fake-openai", "openai", base, UPSTREAM_OPENAI_KEY, ["gpt-4o", "gpt-*", "text-embedding-*"], None),
            provider("fake-anthropic", "anthropic", base, UPSTREAM_ANTHROPIC_KEY, ["claude-*"], None),
        ]
    )
    path.write_text(text)
    return path


class Gateway:
    """A real ``agentrouter serve`` subprocess and the CLI bound to its data dir."""

    def __init__(
        self,
        data_dir: Path,
        config: Path,
        *,
        workers: int = 2,
        port: int | None = None,
        store_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.workers = workers
        self.port = port or free_port()
        self.env = clean_env(data_dir)
        if store_url is not None:
            self.env["AGENTROUTER_STORE_URL"] = store_url
        self.log_path = data_dir.parent / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> Gateway:
        cmd = [
            *agentrouter_cmd(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--config",
            str(self.config),
        ]
        with open(self.log_path, "ab") as log:
            # A session of its own: if SIGTERM does not stop it, its whole group is killed.
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the gateway exited with {self.proc.returncode} during start-up:\n{self.log_tail()}"
                    )
                try:
                    client.get(self.url + "/v1/models")
                    break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the gateway did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")
                time.sleep(0.1)
        # Every worker up: a burst of fresh connections must all be answered.
        for _ in range(2 * self.workers):
            with httpx.Client(timeout=10.0) as client:
                client.get(self.url + "/v1/models")
        return self

    def terminate(self) -> None:
        """Send SIGTERM to the server process (by PID) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the server to exit; kill its process group if it does not."""
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise RuntimeError(f"the gateway did not stop within {timeout} s of SIGTERM:\n{self.log_tail()}") from None
        return self.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            return self.wait(timeout)
        self.returncode = self.proc.returncode
        return self.returncode

    # ------------------------------------------------------------ the CLI

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*agentrouter_cmd(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"agentrouter {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def create_key(
        self,
        *,
        name: str | None = None,
        limit: tuple[str, str] | None = BIG_LIMIT,
        expires_in: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``agentrouter keys create --json``; the result has ``id`` and ``key``."""
        args = ["keys", "create"]
        if name:
            args += ["--name", name]
        if limit is not None:
            args += ["--requests", limit[0], "--interval", limit[1]]
        if expires_in:
            args += ["--expires-in", expires_in]
        if metadata is not None:
            args += ["--metadata", json.dumps(metadata)]
        created = self.cli_json(*args)
        assert created["key"].startswith("sk-ar-"), created
        return created

    def show(self, key_id: str) -> dict[str, Any]:
        return self.cli_json("keys", "show", key_id)

    def usage(self, key_id: str) -> dict[str, Any]:
        return self.show(key_id)["usage"]

    def wait_usage(self, key_id: str, requests: int, timeout: float = 8.0) -> dict[str, Any]:
        """The key's stored usage once it counts ``requests`` requests (or at ``timeout``).

        Usage is written in batches about once a second; the caller asserts on the
        returned totals, so a count that overshoots is caught too.
        """
        deadline = time.monotonic() + timeout
        while True:
            usage = self.usage(key_id)
            if usage["requests"] >= requests or time.monotonic() > deadline:
                return usage
            time.sleep(0.25)


def start_gateway(
    tmp: Path, fake: FakeUpstream, down_url: str, *, workers: int = 2, store_url: str | None = None
) -> Gateway:
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp / "agentrouter.toml", fake.base_url, down_url, raw_url=fake.raw_base_url)
    return Gateway(data_dir, config, workers=workers, store_url=store_url).start()


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def down_url() -> Iterator[str]:
    sock, port = refused_port()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        sock.close()


@pytest.fixture(scope="session")
def sqlite_gateway(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream, down_url: str) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), fake, down_url)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def postgres_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream, down_url: str, postgres_server: PostgresServer
) -> Iterator[Gateway]:
    """The same gateway on a database of the session's PostgreSQL (stopped before it)."""
    url = postgres_server.url(postgres_server.database())
    gw = start_gateway(tmp_path_factory.mktemp("gateway-pg"), fake, down_url, store_url=url)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def gateway(store_backend: str, request: pytest.FixtureRequest) -> Gateway:
    """The session's gateway on the module's store backend (SQLite unless the module is
    marked ``store_backends``), started when first needed."""
    gw: Gateway = request.getfixturevalue(f"{'postgres' if store_backend == 'postgres' else 'sqlite'}_gateway")
    return gw


@pytest.fixture(autouse=True)
def _gateway_still_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test after which the session's gateway is gone fails here, with its log."""
    yield
    if "gateway" in request.fixturenames:
        gw: Gateway = request.getfixturevalue("gateway")
        if gw.proc is not None and gw.proc.poll() is not None:
            pytest.fail(f"the gateway exited with {gw.proc.returncode} during this test:\n{gw.log_tail()}")


@pytest.fixture
def key(gateway: Gateway) -> dict[str, Any]:
    """A fresh key with a limit no test reaches."""
    return gateway.create_key(name="e2e")


@pytest.fixture
def clients(gateway: Gateway) -> Iterator[Callable[..., Any]]:
    """``clients(kind, api_key, **options)``: SDK clients, closed at teardown.

    ``kind``: ``openai`` (Bearer), ``anthropic`` (this SDK release sends Bearer too) or
    ``anthropic-x-api-key`` (the Anthropic SDK sending the key as ``x-api-key``).
    """
    made: list[Any] = []

    def make(kind: str, api_key: str, **options: Any) -> Any:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 30.0)
        if kind == "openai":
            client: Any = openai.OpenAI(api_key=api_key, base_url=gateway.url + "/v1", **options)
        elif kind == "anthropic":
            client = anthropic.Anthropic(api_key=api_key, base_url=gateway.url, **options)
        elif kind == "anthropic-x-api-key":
            # The Anthropic SDK authenticating with x-api-key, as its 0.x releases (and
            # Anthropic's own API docs) do; its 2.x releases send api_key as a Bearer token.
            headers = {**options.pop("default_headers", {}), "x-api-key": api_key}
            client = anthropic.Anthropic(
                api_key=None, auth_token=None, base_url=gateway.url, default_headers=headers, **options
            )
        else:
            raise ValueError(kind)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# ------------------------------------------------------------------- helpers


def assert_ratelimit_headers(headers: Any, *, limit: int | None = None) -> None:
    """``X-RateLimit-Limit``/``-Remaining``/``-Reset`` present and sane (Reset in Unix seconds)."""
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in headers, f"{name} missing from {dict(headers)}"
    lim = int(headers["x-ratelimit-limit"])
    remaining = int(headers["x-ratelimit-remaining"])
    reset = int(headers["x-ratelimit-reset"])
    if limit is not None:
        assert lim == limit
    assert 0 <= remaining <= lim
    now = time.time()
    assert now - 2 <= reset <= now + 10 * 365 * 86400, reset


def assert_no_key_leak(key: str, *texts: str) -> None:
    """No text holds more of ``key`` than its 12-character display prefix."""
    for text in texts:
        assert key[:13] not in text, f"more than the display prefix of the key in: {text!r}"
        for i in range(12, len(key) - 7):
            assert key[i : i + 8] not in text, f"a piece of the key's secret part in: {text!r}"


def response_text(resp: Any) -> str:
    """Status line facts, every header and the body of an httpx/httpx2 response, as one string."""
    headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    return f"{headers}\n\n{resp.text}"


def openai_error(resp: Any, *, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error body ``{"error": {"message", "type", "param", "code"}}``."""
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def anthropic_error(resp: Any, *, type_: str | None = None) -> dict[str, Any]:
    """The Anthropic error body ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    body = resp.json()
    assert body["type"] == "error", body
    assert {"type", "message"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "request_id" in body, body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body["error"]
