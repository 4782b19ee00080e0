"""When the upstream client sends a request a second time (upstream.py, "Sending a
request twice"): only when no byte of it can have reached the upstream.

* A reused keep-alive connection that the upstream closed (FIN or reset) before the
  request was written, with the event loop not yet aware of it: the request goes
  once, on a new connection. The server runs in a thread with blocking sockets, and
  the test blocks the loop until the close has reached the client's socket, so the
  loop cannot have seen it: the client's own check before the write has to.
* A request the upstream received, whose connection then closes (or is reset)
  without an answer: never sent again, a 502 for the app, and the server saw it once.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Self

import pytest

from agentrouter.config import ProviderSettings
from agentrouter.gateway.upstream import UpstreamClient, UpstreamUnavailable

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One request (head and Content-Length body) from a blocking socket; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(buf) < end + length:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    request = bytes(buf[: end + length])
    del buf[: end + length]
    return request


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


Script = Callable[[int, socket.socket, bytearray, "ThreadServer"], None]
"""What the server does on its connection number N (1-based)."""


class ThreadServer:
    """A loopback server in a thread; ``requests[n]`` lists what connection n received."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: dict[int, list[bytes]] = {}
        self.closed = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(10)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = False
        self._open: set[socket.socket] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        for conn in list(self._open):  # a script still reading from a client that stays
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()  # unblock accept()
        except OSError:
            pass
        self._thread.join(10)
        self._sock.close()

    def _run(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self._stop:
                conn.close()
                return
            n += 1
            self.requests[n] = []
            conn.settimeout(10)
            self._open.add(conn)
            try:
                self.script(n, conn, bytearray(), self)
            except OSError:
                pass
            finally:
                self._open.discard(conn)
                conn.close()

    def receive(self, n: int, conn: socket.socket, buf: bytearray) -> bool:
        request = read_request(conn, buf)
        if request is None:
            return False
        self.requests[n].append(request)
        return True

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.requests.values())


@pytest.fixture
async def clients() -> AsyncIterator[list[UpstreamClient]]:
    made: list[UpstreamClient] = []
    yield made
    for c in made:
        await c.close()


async def client_for(port: int, made: list[UpstreamClient]) -> UpstreamClient:
    client = UpstreamClient(
        ProviderSettings(name="t", type="openai", base_url=f"http://127.0.0.1:{port}/v1", models=("m",), read_timeout=5)
    )
    await client.start()
    made.append(client)
    return client


async def post_ok(client: UpstreamClient, body: bytes = b'{"n": 1}') -> bytes:
    resp = await client.post(b"/v1/chat/completions", body, [])
    try:
        return await client.read(resp)
    finally:
        client.release(resp)


def idle_socket(client: UpstreamClient) -> socket.socket:
    (conn,) = client._idle
    assert conn.transport is not None
    sock: socket.socket = conn.transport.get_extra_info("socket")
    return sock


def wait_readable(sock: socket.socket) -> None:
    """Block (the loop too, on purpose) until the upstream's close reached the socket."""
    readable, _, _ = select.select([sock.fileno()], [], [], 5)
    assert readable, "the upstream's close never reached the client's socket"


@pytest.fixture(params=["fin", "reset"])
def close_how(request: pytest.FixtureRequest) -> Iterator[Callable[[socket.socket], None]]:
    yield (lambda conn: conn.shutdown(socket.SHUT_WR)) if request.param == "fin" else reset


async def test_reused_connection_closed_before_the_write_sends_once_on_a_new_one(
    clients: list[UpstreamClient], close_how: Callable[[socket.socket], None]
) -> None:
    def script(n: int, conn: socket.socket, buf: bytearray, server: ThreadServer) -> None:
        if n == 1:
            server.receive(n, conn, buf)
            conn.sendall(OK)  # keep-alive: the client keeps the connection idle...
            close_how(conn)  # ...and the server closes it right away
            server.closed.set()
            return
        while server.receive(n, conn, buf):
            conn.sendall(OK)

    with ThreadServer(script) as server:
        client = await client_for(server.port, clients)
        assert await post_ok(client) == b"{}"
        assert server.closed.wait(5)
        wait_readable(idle_socket(client))
        assert not client._idle[0].closed  # the loop has not seen the close: the check before the write must
        assert await post_ok(client, b'{"n": 2}') == b"{}"
        assert [len(server.requests[n]) for n in sorted(server.requests)] == [1, 1]
        assert server.requests[2][0].endswith(b'{"n": 2}')


async def test_write_refused_by_the_kernel_is_sent_once_on_a_new_connection(clients: list[UpstreamClient]) -> None:
    """The reset arrives after the check (here: the check is switched off): the write
    fails at once (asyncio's and uvloop's transports both try the socket before
    returning from ``write``), nothing left, so it goes once on a new connection."""

    def script(n: int, conn: socket.socket, buf: bytearray, server: ThreadServer) -> None:
        if n == 1:
            server.receive(n, conn, buf)
            conn.sendall(OK)
            reset(conn)
            server.closed.set()
            return
        while server.receive(n, conn, buf):
            conn.sendall(OK)

    with ThreadServer(script) as server:
        client = await client_for(server.port, clients)
        assert await post_ok(client) == b"{}"
        assert server.closed.wait(5)
        wait_readable(idle_socket(client))
        client._idle[0]._poll = None  # as if the reset came in just after the check
        assert await post_ok(client, b'{"n": 2}') == b"{}"
        assert [len(server.requests[n]) for n in sorted(server.requests)] == [1, 1]


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "reused connection"])
async def test_received_then_closed_without_answer_is_not_sent_again(
    clients: list[UpstreamClient], close_how: Callable[[socket.socket], None], reused: bool
) -> None:
    def script(n: int, conn: socket.socket, buf: bytearray, server: ThreadServer) -> None:
        if reused and server.receive(n, conn, buf):
            conn.sendall(OK)
        if server.receive(n, conn, buf):
            close_how(conn)  # the whole request arrived: the provider may be billing it now
        # any further connection: answer, so that a resend would succeed (and be seen)
        while server.receive(n, conn, buf):
            conn.sendall(OK)

    with ThreadServer(script) as server:
        client = await client_for(server.port, clients)
        if reused:
            assert await post_ok(client) == b"{}"
        with pytest.raises(UpstreamUnavailable, match="without answering"):
            await post_ok(client, b'{"n": 2}')
        assert server.total == 1 + reused  # the request that got no answer arrived exactly once
        assert sum(r.endswith(b'{"n": 2}') for reqs in server.requests.values() for r in reqs) == 1


async def test_partly_received_then_closed_is_not_sent_again(clients: list[UpstreamClient]) -> None:
    """Even a request whose first bytes alone arrived is not sent again: the upstream
    may have read the rest from its kernel by the time it closed."""

    def script(n: int, conn: socket.socket, buf: bytearray, server: ThreadServer) -> None:
        server.receive(n, conn, buf)
        conn.sendall(OK)
        data = conn.recv(1)
        if data:
            server.requests[n].append(data)
        reset(conn)

    with ThreadServer(script) as server:
        client = await client_for(server.port, clients)
        assert await post_ok(client) == b"{}"
        with pytest.raises(UpstreamUnavailable):
            await post_ok(client, b'{"n": 2}')
        assert list(server.requests) == [1]  # no second connection: nothing was sent again
