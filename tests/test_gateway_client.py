"""The hot-path upstream client against raw loopback servers: framing (length,
chunked split anywhere, until close), keep-alive reuse and its limits, timeouts,
back-pressure and cancellation. (Strictness: test_gateway_upstream_strict.py and
test_gateway_upstream_h11.py; when a request is sent twice:
test_gateway_upstream_resend.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentrouter.config import ProviderSettings
from agentrouter.gateway.upstream import UpstreamClient, UpstreamTimeout, UpstreamUnavailable
from tests.gateway_fixtures import RawServer, refused_port
from tests.waiting import until


async def client_for(port: int, **settings: object) -> UpstreamClient:
    client = UpstreamClient(
        ProviderSettings(
            name="t", type="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", models=("m",), **settings
        )
    )  # type: ignore[arg-type]
    await client.start()
    return client


@pytest.fixture
async def closer() -> AsyncIterator[list[UpstreamClient]]:
    clients: list[UpstreamClient] = []
    yield clients
    for c in clients:
        await c.close()


def answer(body: bytes, *extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + b"".join(extra)
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


async def test_request_bytes_and_keep_alive_reuse(closer: list[UpstreamClient]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await server.read_request(reader)
            writer.write(answer(b'{"echo": %d}' % len(body)))
            await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        for _i in range(3):
            resp = await client.post(
                b"/v1/chat/completions?x=1",
                b'{"a": 1}',
                [(b"content-type", b"application/json"), (b"Authorization", b"Bearer k")],
            )
            assert resp.status == 200 and (b"content-type", b"application/json") in resp.headers
            assert await client.read(resp) == b'{"echo": 8}'
            client.release(resp)
        assert server.connections == 1  # one keep-alive connection for all three
        first = server.requests[0]
        assert first.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port)
        assert b"content-type: application/json\r\n" in first and b'Content-Length: 8\r\n\r\n{"a": 1}' in first


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 17, 1000])
async def test_chunked_split_anywhere(closer: list[UpstreamClient], piece: int) -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(20)]
    wire = b"".join(b"%x;ext=1\r\n" % len(e) + e + b"\r\n" for e in events) + b"0\r\nX-Trailer: 1\r\n\r\n"
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n" + wire

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            for i in range(0, len(raw), piece):
                writer.write(raw[i : i + piece])
                await writer.drain()
                if piece < 10 and i % 50 == 0:
                    await asyncio.sleep(0)

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        for _ in range(2):  # and the connection is reusable after the trailers
            resp = await client.post(b"/v1/x", b"{}", [])
            got = [c async for c in client.iter_chunks(resp)]
            assert b"".join(got) == b"".join(events)
            client.release(resp)
        assert server.connections == 1


async def test_body_until_close_and_connection_close(closer: list[UpstreamClient]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
            await writer.drain()
            writer.write(b"part two")
        else:
            writer.write(answer(b"{}", b"Connection: close\r\n"))
        await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        resp = await client.post(b"/v1/x", b"{}", [])
        assert await client.read(resp) == b"part one, part two"
        client.release(resp)
        resp = await client.post(b"/v1/x", b"{}", [])
        assert await client.read(resp) == b"{}"
        client.release(resp)
        resp = await client.post(b"/v1/x", b"{}", [])  # a new connection each time
        client.release(resp)
        assert server.connections == 3


async def test_interim_100_continue_and_204(closer: list[UpstreamClient]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            if len(server.requests) == 1:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"ok"))
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        resp = await client.post(b"/", b"", [])
        assert resp.status == 200 and await client.read(resp) == b"ok"
        client.release(resp)
        resp = await client.post(b"/", b"", [])
        assert resp.status == 204 and await client.read(resp) == b""
        client.release(resp)
        assert server.connections == 1


async def test_closed_mid_answer_is_unavailable(closer: list[UpstreamClient]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a bit")
        await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        resp = await client.post(b"/", b"{}", [])
        with pytest.raises(UpstreamUnavailable):
            await client.read(resp)
        client.release(resp)
        assert client.open_connections == 0


async def test_garbage_answer_is_unavailable(closer: list[UpstreamClient]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read(1)

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        with pytest.raises(UpstreamUnavailable, match="not an HTTP"):
            await client.post(b"/", b"{}", [])


async def test_connect_refused(closer: list[UpstreamClient]) -> None:
    client = await client_for(refused_port())
    closer.append(client)
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await client.post(b"/", b"{}", [])
    assert client.open_connections == 0


async def test_read_timeout_counts_silence_not_total_time(closer: list[UpstreamClient]) -> None:
    read_timeout = 0.5
    sent = 0
    silent_from = 0.0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent, silent_from
        loop = asyncio.get_running_loop()
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        started = loop.time()
        # Twice read_timeout in all, never silent for more than a tenth of it.
        while loop.time() - started < 2 * read_timeout:
            await asyncio.sleep(read_timeout / 10)
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            sent += 1
        silent_from = loop.time()
        await asyncio.Event().wait()  # now silent, until the client gives up

    async with RawServer(handler) as server:
        client = await client_for(server.port, read_timeout=read_timeout)
        closer.append(client)
        resp = await client.post(b"/", b"{}", [])
        got = b""
        with pytest.raises(UpstreamTimeout):
            async for chunk in client.iter_chunks(resp):
                got += chunk
        assert sent >= 10 and got == b"ok" * sent  # everything before the silence arrived
        assert asyncio.get_running_loop().time() - silent_from >= read_timeout * 0.999
        client.release(resp)


async def test_pool_limit_queues_requests(closer: list[UpstreamClient]) -> None:
    active = 0
    peak = 0
    two_active = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        while True:
            await server.read_request(reader)
            active += 1
            peak = max(peak, active)
            # The first requests wait for a second one in flight: the pool's two
            # connections are used at once (then a third would show as a peak of 3).
            if active >= 2:
                two_active.set()
            await asyncio.wait_for(two_active.wait(), 10)
            active -= 1
            writer.write(answer(b"{}"))
            await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port, max_connections=2)
        closer.append(client)

        async def one() -> None:
            resp = await client.post(b"/", b"{}", [])
            await client.read(resp)
            client.release(resp)

        await asyncio.gather(*(one() for _ in range(10)))
        assert server.connections == 2 and peak == 2


async def test_slow_reader_pauses_the_upstream(closer: list[UpstreamClient]) -> None:
    block = b"x" * 65536

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * len(block)))
        for _ in range(64):
            writer.write(block)
            await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        resp = await client.post(b"/", b"{}", [])
        conn = resp._conn
        await until(lambda: conn.paused, "the connection paused")  # nobody reads
        assert conn.paused and conn.buffered < 3 * 1024 * 1024  # buffering stopped near the high-water mark
        total = sum([len(c) async for c in client.iter_chunks(resp)])
        assert total == 64 * len(block)
        client.release(resp)


async def test_cancelled_request_closes_the_connection(closer: list[UpstreamClient]) -> None:
    received = asyncio.Event()
    hung_up = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        received.set()
        if not await reader.read(1):
            hung_up.set()

    async with RawServer(handler) as server:
        client = await client_for(server.port)
        closer.append(client)
        task = asyncio.ensure_future(client.post(b"/", b"{}", []))
        await asyncio.wait_for(received.wait(), 10)  # the request is at the upstream, unanswered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(hung_up.wait(), 10)
        assert client.open_connections == 0
