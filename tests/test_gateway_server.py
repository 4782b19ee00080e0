"""``agentrouter serve`` for real: Granian workers in a subprocess, SIGTERM drains
in-flight streams (up to ``shutdown_timeout``) and then writes the usage."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrouter.config import load_settings
from agentrouter.core import Core
from tests.gateway_fixtures import FakeUpstream, sse_handler
from tests.test_gateway_upstream import chat_chunks
from tests.waiting import until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path, upstream_url: str, **env: str) -> None:
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.config = tmp / "agentrouter.toml"
        self.config.write_text(
            f'[[providers]]\nname = "up"\ntype = "openai"\nbase_url = "{upstream_url}"\napi_key = "sk-up"\n'
            'models = ["gpt-*"]\n\n[[providers]]\nname = "mock"\ntype = "mock"\n'
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
        self.env.update(AGENTROUTER_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1", **env)
        self.proc: asyncio.subprocess.Process | None = None
        self.log = tmp / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    async def launch(cls, tmp: Path, upstream_url: str, **env: str) -> tuple[Server, str, str]:
        """A server with one key (raw key, key id), started."""
        server = cls(tmp, upstream_url, **env)
        key, key_id = await server.create_key()
        await server.start()
        return server, key, key_id

    async def open_core(self) -> Core:
        """The core as the server opens it: the same environment."""
        return await Core.from_settings(load_settings(env=self.env))

    async def create_key(self) -> tuple[str, str]:
        core = await self.open_core()
        try:
            created = await core.keys.create(name="server-test")
            return created.key, created.row.id
        finally:
            await core.close()

    async def usage(self, key_id: str) -> Any:
        core = await self.open_core()
        try:
            return (await core.keys.get(key_id)).usage
        finally:
            await core.close()

    async def start(self) -> None:
        with open(self.log, "wb") as log:  # noqa: ASYNC230 - a local file, opened once before the server starts
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentrouter.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                "2",
                "--config",
                str(self.config),
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                assert self.proc.returncode is None, self.log.read_text()
                try:
                    await client.get(self.url + "/v1/models")
                    return
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise AssertionError("server did not start:\n" + self.log.read_text()) from None
                    await asyncio.sleep(0.1)

    async def stop(self, within: float = 30, *, ctrl_c: bool = False) -> int:
        """SIGTERM to the server, or (``ctrl_c``) SIGINT to its whole process group,
        as a terminal's Ctrl-C sends it: the workers and their usage writers too."""
        assert self.proc is not None
        if self.proc.returncode is None:
            if ctrl_c:
                os.killpg(self.proc.pid, signal.SIGINT)
            else:
                self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            ps = ["ps", "-o", "pid,ppid,stat,args", "-g", str(self.proc.pid)]
            tree = (await asyncio.to_thread(subprocess.run, ps, capture_output=True, text=True)).stdout
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(
                f"the server did not exit in {within} s; processes:\n{tree}\nlog:\n{self.log.read_text()}"
            ) from None


async def _stream(url: str, key: str, got: list[tuple[float, bytes]]) -> int:
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o", "stream": True, "messages": []},
        ) as resp,
    ):
        try:
            async for chunk in resp.aiter_raw():
                got.append((time.monotonic(), chunk))
        except httpx.HTTPError:
            pass
        return resp.status_code


async def _answer_then_stream(
    server: Server, key: str, *, requests: int, streams: int
) -> tuple[list[tuple[float, bytes]], list[asyncio.Future[int]]]:
    """``requests`` chat completions answered, then ``streams`` streams under way (two
    chunks received): the chunks received and the streams' futures (their status)."""
    async with httpx.AsyncClient() as client:
        for _ in range(requests):
            r = await client.post(
                server.url + "/v1/chat/completions",
                headers={"x-api-key": key},
                json={"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200
    got: list[tuple[float, bytes]] = []
    futures = [asyncio.ensure_future(_stream(server.url, key, got)) for _ in range(streams)]
    await until(lambda: len(got) >= 2, "two chunks of the streams")
    return got, futures


async def test_sigterm_drains_streams_then_writes_usage(tmp_path: Path, upstream: FakeUpstream) -> None:
    events = chat_chunks(15)
    upstream.routes["/v1/chat/completions"] = sse_handler(events, gap=0.1)
    server, key, key_id = await Server.launch(tmp_path, upstream.base_url)
    try:
        got, streams = await _answer_then_stream(server, key, requests=5, streams=2)
    finally:
        code = await server.stop()
    assert code == 0, server.log.read_text()
    assert await asyncio.gather(*streams) == [200, 200]
    body = b"".join(c for _, c in got)
    assert body.count(b"data: [DONE]") == 2  # both streams ran to their end after SIGTERM
    totals = await server.usage(key_id)
    assert (totals.requests, totals.successes) == (7, 7)
    assert totals.output_tokens >= 2 * 15


async def test_shutdown_timeout_cuts_long_streams_and_still_writes_usage(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.routes["/v1/chat/completions"] = sse_handler(chat_chunks(300), gap=0.1)  # 30 s
    server, key, key_id = await Server.launch(tmp_path, upstream.base_url, AGENTROUTER_SHUTDOWN_TIMEOUT="1")
    got: list[tuple[float, bytes]] = []
    stream = asyncio.ensure_future(_stream(server.url, key, got))
    await until(lambda: len(got) >= 2, "two chunks of the stream")
    started = time.monotonic()
    code = await server.stop()
    took = time.monotonic() - started
    assert code == 0, server.log.read_text()
    assert 0.8 < took < 8, took
    await asyncio.wait_for(stream, 5)
    # The cut stream ends with the dialect's error event, and counts as a failure.
    body = b"".join(c for _, c in got)
    assert b"[DONE]" not in body and body.endswith(b"\n\n")
    assert body.rsplit(b"\n\n", 2)[-2].startswith(b'data: {"error":{"message":"The gateway is shutting down')
    totals = await server.usage(key_id)
    assert (totals.requests, totals.failures_5xx) == (1, 1)
    # The gateway hung up on the upstream too.
    await until(lambda: upstream.seen[-1].cancelled, "the upstream request cancelled")


async def test_ctrl_c_to_the_process_group_loses_no_usage(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Ctrl-C reaches every process of the group at once, the usage writers included:
    they wait for their workers' last batches, and every answered request is stored.
    Each worker gets two signals (SIGINT, then the parent's SIGTERM): without
    ``server._signal_workers_once`` about 1 run in 10 hung a worker inside Granian."""
    upstream.routes["/v1/chat/completions"] = sse_handler(chat_chunks(10), gap=0.05)
    server, key, key_id = await Server.launch(tmp_path, upstream.base_url)
    try:
        _, streams = await _answer_then_stream(server, key, requests=20, streams=1)
    finally:
        code = await server.stop(ctrl_c=True)
    assert code == 0, server.log.read_text()
    assert await streams[0] == 200
    totals = await server.usage(key_id)
    assert (totals.requests, totals.successes) == (21, 21), server.log.read_text()
    assert "usage writer" not in server.log.read_text()  # no writer died and had to be replaced
