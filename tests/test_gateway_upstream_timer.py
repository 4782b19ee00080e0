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
from tests.waiting import until

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


class DelayServer:
    """Answers each request on a keep-alive connection after the next delay queued
    in ``delays`` (seconds, or an event to wait for; none queued: at once)."""

    def __init__(self) -> None:
        self.delays: list[float | asyncio.Event] = []
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
                        delay = self.delays.pop(0)
                        if isinstance(delay, asyncio.Event):
                            await delay.wait()
                        else:
                            await asyncio.sleep(delay)
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
    (conn,) = client._connections
    armed = conn.timer
    # Half-way through that timer (a position in time, not a wait for an event), a
    # second request, answered when the test says so.
    await asyncio.sleep(0.15)
    answer = asyncio.Event()
    server.delays.append(answer)
    second = asyncio.ensure_future(one(client))
    # The earlier timer fires 0.15 s into this request: 0.15 s of silence, not a
    # timeout; it re-arms itself for the remaining 0.15 s. Then the answer comes.
    await until(lambda: conn.timer is not armed, "the earlier timer to fire and re-arm")
    assert conn.timer is not None and not second.done()
    answer.set()
    assert await second == b"{}"
    # Now silent for longer than read_timeout: a timeout, 0.3 s after sending, not earlier.
    server.delays.append(asyncio.Event())  # never set: no answer at all
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await one(client)
    assert 0.28 <= time.monotonic() - started < 1.0
    # The aborted transport reports its loss on a later turn of the loop.
    await until(lambda: client.open_connections == 0, "the timed-out connection closed")
    assert client.open_connections == 0  # the timed-out connection is closed, not reused
    assert await one(client) == b"{}"  # and a new one works
    assert server.connections == 2


async def test_idle_connection_lets_its_timer_lapse(server: DelayServer, client: UpstreamClient) -> None:
    assert await one(client) == b"{}"
    (conn,) = client._connections
    await until(lambda: conn.timer is None, "the timer to lapse")  # after read_timeout, idle in the pool
    assert conn.timer is None and not conn.closed  # lapsed; the connection is kept
    assert await one(client) == b"{}"
    assert server.connections == 1 and conn.timer is not None


async def test_closing_a_connection_cancels_its_timer(server: DelayServer, client: UpstreamClient) -> None:
    assert await one(client) == b"{}"
    (conn,) = client._connections
    timer = conn.timer
    assert timer is not None
    await client.close()
    await until(lambda: conn.timer is None, "the connection to let go of its timer")
    assert timer.cancelled() and conn.timer is None
