"""The hot-path upstream HTTP client: one keep-alive connection pool per provider.

Why a dedicated client. Measured on this machine (2 cores, shared), CPU time per
proxied request against a local nginx, at 16 concurrent requests:

=========================================  ==============
client                                     CPU per request
=========================================  ==============
aiohttp ``ClientSession`` (tuned pool,     ~115-140 us
no decompression, no cookie jar)
this module (asyncio ``Protocol``)         ~35-40 us
an empty Granian ASGI app, for scale       ~70 us
=========================================  ==============

(The issue measured, as a bare proxy on one core at 16 connections: httpx ~700
req/s, httpx over aiohttp ~2,200, aiohttp ~5,600, empty Granian ~14,000.) With
aiohttp the gateway's whole budget for 4,500 req/s on one core (~220 us per
request) was spent before authentication, routing and usage; with this client they
fit with room to spare. httpx stays the client for calls off the hot path.

What it does, and only that: HTTP/1.1 requests with a body over keep-alive
connections (TCP with ``TCP_NODELAY``, or TLS verified against the system's trust
store, or against the CA file / ``ssl.SSLContext`` given to the client, see
``UpstreamClient``), responses framed by ``Content-Length``, ``chunked`` or
connection close and parsed as strictly as h11 and hyper (``gateway.http1``: an
answer that breaks HTTP/1.1 is ``UpstreamInvalid`` and its connection is closed),
bytes handed over as they arrive (``iter_chunks``) or whole (``read``). It writes
the caller's header bytes as given (the app has already filtered them) plus ``Host``
and ``Content-Length``; it never decompresses, follows no redirects and keeps no
cookies.

* Pool: at most ``max_connections`` per provider per worker; the most recently used
  idle connection first; an idle connection older than ``keepalive_timeout`` is
  closed instead of reused, and so is one that did not end its last exchange cleanly
  (an error, bytes past the answer, ``Connection: close``, HTTP/1.0, a body not
  entirely written).
* Timeouts: ``connect_timeout`` for the TCP/TLS connection, ``read_timeout`` for the
  longest silence while waiting for the answer or the next bytes of a stream. One
  timer per connection, not per read nor per request: it stays armed across the
  requests of a keep-alive connection, and when it fires it compares the silence so
  far with ``read_timeout`` and re-arms itself for the rest (or lapses on an idle
  connection), so a busy connection costs no timer work per request.
* Back-pressure: a stream whose reader falls behind by more than 1 MiB pauses
  reading from the upstream until it catches up.
* Cancellation: an abandoned response (``release`` before the end, or the calling
  task cancelled) closes its connection, which is how the upstream learns that the
  caller went away.

Sending a request twice. A provider bills what it received, so a request goes out a
second time only when no byte of it can have reached the upstream, which is when, on
the connection chosen for it:

1. the connection was seen closed before the write: ``connection_lost`` ran, the
   transport is closing, or (a reused connection) the socket is readable, which on
   an idle keep-alive connection means the upstream's EOF or reset has arrived (or
   bytes nobody asked for, after which it is not used either); checked with one
   ``poll`` of the socket, without waiting, just before the write; or
2. the write failed at once: asyncio's transports try the socket before returning
   from ``write`` and close on an error, so a transport closing right after the
   first ``write`` means the kernel refused the bytes (where a loop buffers the
   write instead, as uvloop may, this never applies: the request then counts as
   sent).

The second attempt is on a new connection, and is the last. Anything else after the
first byte was handed to the kernel, including a connection closed or reset "before
any byte of the answer", is not proof: the upstream may have read the request and
be working on it, so it is not sent again; it is a 502 (``UpstreamUnavailable``),
and retrying is the caller's choice (the SDKs retry 5xx by default). The window
between the ``poll`` and the write is microseconds: an upstream that closes an idle
connection just then costs a 502, never a double bill; keep ``keepalive_timeout``
below the upstream's own idle timeout to make that rare.

Failures are exceptions of the ``UpstreamError`` family, mapped by the app to 502
and 504.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from agentrouter.config import ProviderSettings
from agentrouter.errors import AgentRouterError
from agentrouter.gateway.http1 import ResponseParser

__all__ = [
    "UpstreamClient",
    "UpstreamError",
    "UpstreamInvalid",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class UpstreamError(AgentRouterError):
    """The upstream could not be reached, broke off, answered wrongly or not in time."""


class UpstreamUnavailable(UpstreamError):
    """Connection refused, reset or closed, DNS or TLS failure: 502."""


class UpstreamInvalid(UpstreamUnavailable):
    """The answer breaks HTTP/1.1 (``gateway.http1``: framing, field syntax, a 101, a
    head over 64 KiB): 502. Its connection is closed."""


class UpstreamTimeout(UpstreamError):
    """No connection within ``connect_timeout`` or silence for ``read_timeout``: 504."""


class _NotSent(Exception):
    """No byte of the request left this connection: it may go out on another one."""


_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18
_POLL = getattr(select, "poll", None)


class UpstreamResponse:
    """Status and headers of an answer, and its body still arriving."""

    __slots__ = ("_conn", "framing", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], framing: str, conn: _Connection) -> None:
        self.status = status
        self.headers = headers
        """As received, in order: [(name, value)], names lower-cased, values without
        surrounding whitespace."""
        self.framing = framing
        """``http1.LENGTH``, ``CHUNKED`` or ``CLOSE`` (the body ends when the upstream
        closes the connection: its end is not proof that it is complete)."""
        self._conn = conn


class _Connection(ResponseParser, asyncio.Protocol):
    """One upstream connection; one request at a time."""

    def __init__(self, client: UpstreamClient) -> None:
        ResponseParser.__init__(self)
        self.client = client
        self.loop = client._loop
        self.transport: asyncio.Transport | None = None
        self._poll: select.poll | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.last_activity = 0.0
        self.head: asyncio.Future[UpstreamResponse] | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.error: UpstreamError | None = None
        self.timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # A request goes out in one write, but its answer must not wait for an ACK of
        # the previous one: no Nagle. asyncio's and uvloop's TCP transports set this
        # already; setting it here keeps it true whatever the event loop.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass  # not TCP (a Unix socket in a test), or a loop without the option
            if _POLL is not None:
                try:
                    self._poll = _POLL()
                    self._poll.register(sock.fileno(), select.POLLIN)
                except (OSError, AttributeError, ValueError):
                    self._poll = None

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.feed(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._poll = None  # the descriptor may be reused from now on
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        why = self.feed_eof()
        if why is not None:
            self._fail(UpstreamUnavailable(f"the upstream {why}" + (f": {exc}" if exc else "")))
        self.client._forget(self)

    # -------------------------------------------------------------- parser hooks

    def _on_head(self, status: int, headers: list[tuple[bytes, bytes]], framing: str) -> None:
        head = self.head
        if head is not None and not head.done():
            head.set_result(UpstreamResponse(status, headers, framing, self))

    def _on_body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _on_end(self) -> None:
        self._wake()  # the timer stays armed for the connection's next request

    def _on_invalid(self, message: str) -> None:
        self._fail(UpstreamInvalid(f"invalid answer from the upstream: {message}"))
        self.abort()

    def _on_extra(self) -> None:
        self.abort()  # bytes nobody asked for: not to be trusted with another request

    # -------------------------------------------------------------- request

    def send(self, request: bytes, body: bytes, read_timeout: float) -> asyncio.Future[UpstreamResponse]:
        """Write the request; raises ``_NotSent`` when provably no byte of it left
        (see "Sending a request twice" in the module docstring)."""
        transport = self.transport
        assert transport is not None
        if self.closed or transport.is_closing():
            raise _NotSent
        if self.reused and self._poll is not None and self._poll.poll(0):
            # An idle connection with something to read has an EOF, a reset or bytes
            # nobody asked for: the upstream is closing it.
            raise _NotSent
        self.expect_response()
        self.error = None
        self.chunks = []
        self.buffered = 0
        self.head = head = self.loop.create_future()
        self.last_activity = self.loop.time()
        if body and len(body) < 65536:
            transport.write(request + body)
            body = b""
        else:
            transport.write(request)
        if transport.is_closing():
            # The write failed at once: asyncio's transports try the socket first and
            # close on an error, which means the kernel took none of these bytes.
            self.head = None
            self.abandon()
            raise _NotSent
        if body:
            transport.write(body)
        if self.timer is None:  # else the timer of an earlier request still runs: see _check_timeout
            self.timer = self.loop.call_later(read_timeout, self._check_timeout, read_timeout)
        return head

    def _check_timeout(self, read_timeout: float) -> None:
        self.timer = None
        if self.done:
            return  # between requests: the next one arms a new timer
        silent = self.loop.time() - self.last_activity
        if silent >= read_timeout * 0.999:
            self._fail(UpstreamTimeout(f"no answer from the upstream for {read_timeout:g} s"))
            self.abort()
        else:
            self.timer = self.loop.call_later(read_timeout - silent, self._check_timeout, read_timeout)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -------------------------------------------------------------- body delivery

    def _fail(self, error: UpstreamError) -> None:
        """The answer in progress will not complete."""
        if self.error is not None:
            return
        self.error = error
        self.abandon()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        head = self.head
        if head is not None and not head.done():
            head.set_exception(error)
            head.exception()  # retrieved by post()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    @property
    def complete(self) -> bool:
        return self.done and self.error is None and not self.chunks


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The TLS settings of an ``https`` upstream: certificate and host name verified,
    against the system's trust store, or against ``ca_file`` alone (a PEM bundle, for
    a provider behind a private CA)."""
    return ssl.create_default_context(cafile=ca_file)


class UpstreamClient:
    """One provider's pool. ``start()`` and ``close()`` run on the worker's event loop.

    For an ``https`` ``base_url`` the certificate is verified against ``ssl_context``
    when given, else against ``ca_file`` alone when given (a keyword here, or a
    ``ca_file`` field of the provider's settings),
    else against the system's trust store.
    """

    def __init__(
        self, settings: ProviderSettings, *, ssl_context: ssl.SSLContext | None = None, ca_file: str | None = None
    ) -> None:
        url = urlsplit(settings.base_url or "http://invalid")
        self._scheme = url.scheme
        self._host = url.hostname or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        default_port = (url.scheme == "https" and self._port == 443) or (url.scheme == "http" and self._port == 80)
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal
        host_value = host if default_port else f"{host}:{self._port}"
        self._host_header = b"Host: " + host_value.encode("idna" if not self._host.isascii() else "ascii") + b"\r\n"
        self.base_path = url.path.rstrip("/")
        """The path of ``base_url`` (``/v1``), to which the routes' paths are appended."""
        self._limit = settings.max_connections
        self._connect_timeout = settings.connect_timeout
        self._read_timeout = settings.read_timeout
        self._keepalive = settings.keepalive_timeout
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = ssl_context or tls_context(ca_file or settings.ca_file)
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._connections: set[_Connection] = set()
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = False

    async def close(self) -> None:
        self._closing = True
        for conn in list(self._connections):
            conn.abort()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    @property
    def open_connections(self) -> int:
        return self._open

    # -------------------------------------------------------------- pool

    async def _acquire(self, fresh: bool = False) -> _Connection:
        """An idle connection (the most recently used), else a new one (``fresh``:
        always a new one), waiting for a free place in the pool if need be."""
        while True:
            if self._closing:
                raise UpstreamUnavailable("the upstream client is closed")
            now = self._loop.time()
            idle = self._idle
            while idle and not fresh:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self._keepalive:
                    conn.reused = True
                    return conn
                conn.abort()
            if self._open < self._limit:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise

    async def _connect(self) -> _Connection:
        try:
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout(
                f"no connection to {self._host}:{self._port} within {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamUnavailable(f"cannot connect to {self._host}:{self._port}: {exc.strerror or exc}") from None
        self._connections.add(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        """A connection closed (by either side)."""
        if conn in self._connections:
            self._connections.discard(conn)
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _give_back(self, conn: _Connection) -> None:
        if conn.closed:
            return
        transport = conn.transport
        if (
            conn.keep_alive
            and conn.complete
            and not self._closing
            and transport is not None
            and not transport.get_write_buffer_size()  # the upstream answered before reading all the body
        ):
            conn.idle_since = self._loop.time()
            conn.reused = False
            self._idle.append(conn)
            self._wake_one()
        else:
            conn.abort()  # connection_lost → _forget

    # -------------------------------------------------------------- requests

    async def post(self, path: bytes, body: bytes, headers: Sequence[tuple[bytes, bytes]]) -> UpstreamResponse:
        """Send ``POST path`` and return once the status and headers have arrived.

        ``path`` is the full request target (``/v1/chat/completions?x=1``). The caller
        owns the response: it reads it (``read`` / ``iter_chunks``) and then calls
        ``release``; cancelling the calling task closes the connection.
        """
        head = b"".join(
            [
                b"POST ",
                path,
                b" HTTP/1.1\r\n",
                self._host_header,
                *[name + b": " + value + b"\r\n" for name, value in headers],
                b"Content-Length: ",
                b"%d" % len(body),
                b"\r\n\r\n",
            ]
        )
        conn = await self._acquire()
        try:
            return await conn.send(head, body, self._read_timeout)
        except _NotSent:
            conn.abort()
        except BaseException:
            conn.abort()
            raise
        # Provably never sent on that connection (see the module docstring): once more,
        # on a new one.
        conn = await self._acquire(fresh=True)
        try:
            return await conn.send(head, body, self._read_timeout)
        except _NotSent:
            conn.abort()
            raise UpstreamUnavailable("the upstream closed a new connection before the request was sent") from None
        except BaseException:
            conn.abort()
            raise

    @staticmethod
    async def read(response: UpstreamResponse) -> bytes:
        """The whole body."""
        conn = response._conn
        parts = []
        while True:
            if conn.chunks:
                parts.append(conn.take())
            if conn.error is not None:
                raise conn.error
            if conn.done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await conn.wait()

    @staticmethod
    async def iter_chunks(response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The body as the bytes arrive (what one network read delivered, unframed)."""
        conn = response._conn
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.error is not None:
                raise conn.error
            if conn.done:
                return
            await conn.wait()

    @staticmethod
    def release(response: UpstreamResponse) -> None:
        """Done with the response: its connection goes back to the pool when the answer
        was read completely, else it is closed (the upstream sees the request cancelled)."""
        conn = response._conn
        conn.client._give_back(conn)

    @staticmethod
    def abort(response: UpstreamResponse) -> None:
        response._conn.abort()
