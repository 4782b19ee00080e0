"""Helpers of the HTTP account tests: a real ``agentrouter serve`` on loopback with
accounts (and, when given, the fake OAuth providers), people seeded through the
accounts service on the same data directory, and browser-like clients.

``Served`` runs ``python -m agentrouter.cli serve --workers N`` in a session of its
own, stopped by PID. The test process opens the same data directory with the same
secret (``seed``) to create users and keys exactly as the CLI would.

``Browser`` is an ``httpx.Client`` that keeps cookies and sends what a page of this
site sends: ``Origin`` on every request and, once signed in, ``X-CSRF-Token``. Each
request uses a fresh connection (``fresh=True``) when a test must reach every
worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from agentrouter.accounts.service import AccountService
from agentrouter.actor import INSTANCE
from agentrouter.config import load_settings
from agentrouter.core import Core
from tests.api_fixtures import free_port
from tests.oauth_fakes import CLIENT_ID, CLIENT_SECRET, FakeGitHub, FakeGoogle

SECRET = "accounts-web-secret-0123456789abcdef0123456789"
STRONG = "Velvet-Harbor-42-Quince"
OTHER_STRONG = "Amber7-Lantern-Drift-Oxbow"
START_TIMEOUT = 45.0
T = TypeVar("T")


class Served:
    """``agentrouter serve`` with accounts on a private data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        env: dict[str, str] | None = None,
        github: FakeGitHub | None = None,
        google: FakeGoogle | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
        self.env.update(
            {
                "AGENTROUTER_DATA_DIR": str(data_dir),
                "AGENTROUTER_SECRET": SECRET,
                "AGENTROUTER_PUBLIC_URL": self.url,
                "AGENTROUTER_ACCOUNTS_REGISTRATION": "open",
                "AGENTROUTER_USAGE_WRITER": "inline",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if github is not None:
            self.env.update(
                {
                    "AGENTROUTER_OAUTH_GITHUB_CLIENT_ID": CLIENT_ID,
                    "AGENTROUTER_OAUTH_GITHUB_CLIENT_SECRET": CLIENT_SECRET,
                    "AGENTROUTER_OAUTH_GITHUB_AUTHORIZE_URL": github.url + "/login/oauth/authorize",
                    "AGENTROUTER_OAUTH_GITHUB_ACCESS_TOKEN_URL": github.url + "/login/oauth/access_token",
                    "AGENTROUTER_OAUTH_GITHUB_API_BASE_URL": github.api_url,
                }
            )
        if google is not None:
            self.env.update(
                {
                    "AGENTROUTER_OAUTH_GOOGLE_CLIENT_ID": CLIENT_ID,
                    "AGENTROUTER_OAUTH_GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
                    "AGENTROUTER_OAUTH_GOOGLE_SERVER_METADATA_URL": google.discovery_url,
                }
            )
        self.env.update(env or {})
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> Served:
        cmd = [sys.executable, "-m", "agentrouter.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", str(self.workers)]
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
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(self.url + "/api/openapi.json").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"serve did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")
                time.sleep(0.1)
        for _ in range(4 * self.workers):  # every worker up
            with httpx.Client(timeout=10.0) as client:
                client.get(self.url + "/api/openapi.json")
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    # -- the operator's side ------------------------------------------------------

    def seed(self, op: Callable[[Core, AccountService], Awaitable[T]]) -> T:
        """Run ``op`` on a core of this data directory (the CLI's way in)."""

        async def main() -> T:
            settings = load_settings(
                env={
                    "AGENTROUTER_DATA_DIR": str(self.data_dir),
                    "AGENTROUTER_SECRET": SECRET,
                    "AGENTROUTER_PUBLIC_URL": self.url,
                }
            )
            core = await Core.from_settings(settings)
            try:
                assert core.accounts is not None
                return await op(core, core.accounts)
            finally:
                await core.close()

        return asyncio.run(main())

    def user(self, email: str, *, role: str = "member", password: str = STRONG, verified: bool = True) -> str:
        """A new user (as an admin or the CLI creates one); their id."""

        async def make(core: Core, acc: AccountService) -> str:
            user, _ = await acc.create_user(INSTANCE, email=email, password=password, role=role, verified=verified)
            return user.id

        return self.seed(make)

    def manage_key(self, owner: str | None = None) -> str:
        async def make(core: Core, acc: AccountService) -> str:
            return (await core.keys.create(name="manage", scope="manage", owner=owner)).key

        return self.seed(make)

    def browser(self) -> Browser:
        return Browser(self.url)


class Browser:
    """A browser of this site: cookies kept, ``Origin`` sent, the CSRF token once known."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=30.0, headers={"origin": url, "user-agent": FIREFOX})
        self.csrf: str | None = None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, fresh: bool = False, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.csrf is not None:
            headers.setdefault("x-csrf-token", self.csrf)
        if not fresh:
            return self.client.request(method, path, headers=headers, **kwargs)
        # A new connection (so successive requests spread over the workers), same cookies.
        with httpx.Client(base_url=self.url, timeout=30.0, headers=self.client.headers) as other:
            other.cookies = self.client.cookies
            resp = other.request(method, path, headers=headers, **kwargs)
            self.client.cookies = other.cookies
            return resp

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def sign_in(self, email: str, password: str = STRONG) -> dict[str, Any]:
        resp = self.post("/api/v1/auth/signin", json={"email": email, "password": password})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["status"] == "signed_in":
            self.csrf = body["csrf_token"]
        return body

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get("agentrouter_session")


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
