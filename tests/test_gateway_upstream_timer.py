"""The upstream client's read timeout over keep-alive: one timer per connection,
armed across requests (no timer work per request on a busy connection), and still
exact: silence of ``read_timeout`` fails a request, shorter silences never do, even
on a connection reused while the timer of an earlier request is still running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Self

import pytest

from agentrouter.config import ProviderSettings
from agentrouter.gateway.upstream import UpstreamClient, UpstreamTimeout

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


class DelayServer:
    """Answers each request on a keep-alive connection after the next delay queued
    in ``delays`` (seconds; none queued: at once)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.connections = 0
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self.handlers.add(task)
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    if self.delays:
                        await asyncio.sleep(self.delays.pop(0))
                    writer.write(ANSWER)
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:  # one may still be sleeping on a delay
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[DelayServer]:
    async with DelayServer() as s:
        yield s


@pytest.fixture
async def client(server: DelayServer) -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(
        ProviderSettings(
            name="t",
            type="openai",
            base_url=f"http://127.0.0.1:{server.port}/v1",
            api_key="k",
            models=("m",),
            read_timeout=0.3,
        )
    )
    await c.start()
    yield c
    await c.close()


async def one(client: UpstreamClient) -> bytes:
    resp = await client.post(b"/v1/x", b"{}", [])
    try:
        return await client.read(resp)
    finally:
        client.release(resp)


async def test_busy_connection_keeps_one_timer(server: DelayServer, client: UpstreamClient) -> None:
    assert await one(client) == b"{}"
    (conn,) = client._connections
    timer = conn.timer
    assert timer is not None
    for _ in range(50):
        assert await one(client) == b"{}"
    assert conn.timer is timer and not timer.cancelled()  # the same timer, never re-created
    assert server.connections == 1


async def test_reused_connection_times_out_on_silence_only(server: DelayServer, client: UpstreamClient) -> None:
    assert await one(client) == b"{}"  # arms the connection's timer (fires 0.3 s from now)
    await asyncio.sleep(0.2)
    # The earlier timer fires 0.1 s into this request: 0.1 s of silence, not a timeout;
    # it re-arms itself for the remaining 0.2 s, and the answer comes at 0.25 s.
    server.delays.append(0.25)
    assert await one(client) == b"{}"
    # Now silent for longer than read_timeout: a timeout, 0.3 s after sending, not earlier.
    server.delays.append(2.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await one(client)
    assert 0.28 <= time.monotonic() - started < 1.0
    await asyncio.sleep(0.01)  # the aborted transport reports its loss on the next turn
    assert client.open_connections == 0  # the timed-out connection is closed, not reused
    assert await one(client) == b"{}"  # and a new one works
    assert server.connections == 2


async def test_idle_connection_lets_its_timer_lapse(server: DelayServer, client: UpstreamClient) -> None:
    assert await one(client) == b"{}"
    (conn,) = client._connections
    await asyncio.sleep(0.4)  # longer than read_timeout, idle in the pool
    assert conn.timer is None and not conn.closed  # lapsed; the connection is kept
    assert await one(client) == b"{}"
    assert server.connections == 1 and conn.timer is not None


async def test_closing_a_connection_cancels_its_timer(server: DelayServer, client: UpstreamClient) -> None:
    assert await one(client) == b"{}"
    (conn,) = client._connections
    timer = conn.timer
    assert timer is not None
    await client.close()
    await asyncio.sleep(0.01)
    assert timer.cancelled() and conn.timer is None
