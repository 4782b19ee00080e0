"""A lean Redis connection for the limiter's hot path: one TCP (or TLS, or Unix)
connection per process, every call pipelined on it, RESP2 parsed by hand.

Why not redis-py for this: per call redis-py takes a connection from its pool,
packs the command through several layers, and parses the reply with its general
parser; on the gateway's hot path (one call per request) that client-side work
costs about as much as the round trip itself. Here a call is one ``write`` of the
encoded command and one future resolved by ``data_received``; concurrent requests
share the connection, so their commands leave in the same segments and their
replies arrive together (Redis answers in order: the n-th reply is the n-th
call's).

Failures. Each call is bounded by ``timeout``: when a call's reply has not come by
then, the connection is closed and every call still waiting on it fails with
``ConnectionError`` (their outcome is unknown; none is ever sent again). The next
call connects anew (connecting is bounded by the same timeout). An error reply
(``-ERR …``) is a ``ResponseError`` for that call alone.

Only what the limiter needs: the commands are byte strings or integers; the
replies are ints, bytes, None, lists of those, or ``ResponseError``. (The rest of
the limiter's calls, rare ones, use redis-py.)
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any

from redis.connection import parse_url
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

__all__ = ["RespConnection"]


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def encode(args: tuple[bytes | str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One reply from ``buf`` at ``pos``: (value, position after it); raises
    ``_Incomplete`` when the reply is not all there yet."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    if kind == 42:  # '*': an array; its integers and bulk strings read here, without a call each
        count = int(buf[pos + 1 : end])
        if count < 0:
            if count != -1:
                raise ConnectionError(f"an array of length {count} from Redis")
            return None, end + 2
        items: list[Any] = []
        pos = end + 2
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                raise _INCOMPLETE
            kind = buf[pos]
            if kind == 58:
                items.append(int(buf[pos + 1 : end]))
                pos = end + 2
            elif kind == 36:
                size = int(buf[pos + 1 : end])
                if size < 0:
                    if size != -1:
                        raise ConnectionError(f"a bulk string of length {size} from Redis")
                    items.append(None)
                    pos = end + 2
                else:
                    pos = end + 2 + size + 2
                    if len(buf) < pos:
                        raise _INCOMPLETE
                    items.append(buf[end + 2 : pos - 2])
            else:
                item, pos = parse(buf, pos)
                items.append(item)
        return items, pos
    if kind == 58:  # ':'
        return int(buf[pos + 1 : end]), end + 2
    if kind == 36:  # '$'
        size = int(buf[pos + 1 : end])
        if size < 0:
            if size != -1:
                raise ConnectionError(f"a bulk string of length {size} from Redis")
            return None, end + 2
        start = end + 2
        if len(buf) < start + size + 2:
            raise _INCOMPLETE
        return buf[start : start + size], start + size + 2
    if kind == 43:  # '+'
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # '-'
        return ResponseError(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise ConnectionError(f"unexpected reply from Redis: {bytes(buf[pos : pos + 20])!r}")


class _Protocol(asyncio.Protocol):
    """One connection: the calls waiting on it, in the order they were sent, each with
    its deadline, and one timer for the oldest."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.outbox: list[bytes] = []
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.failed: Exception | None = None
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop calls this a loop turn after create_connection returned; its transports
        # are not asyncio.Transport subclasses.)
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Send ``command``; its future gets the reply. On an idle connection it is
        written at once (a lone request pays no extra loop turn); while calls are in
        flight it is queued and written at the end of this loop turn with every other
        command queued in it (one system call for all the requests a turn handles)."""
        future: asyncio.Future[Any] = loop.create_future()
        if self.failed is not None:  # failed since the caller got it
            future.set_exception(self.failed)
            return future
        deadline = loop.time() + self.timeout
        idle = not self.pending
        self.pending.append((future, deadline))
        if self._watch is None:
            self._watch = loop.call_at(deadline, self._check)
        outbox = self.outbox
        if idle and not outbox:
            assert self.transport is not None
            self.transport.write(command)
        else:
            outbox.append(command)
            if len(outbox) == 1:
                loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        outbox, self.outbox = self.outbox, []
        transport = self.transport
        if transport is not None and self.failed is None and outbox:
            transport.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))

    def _check(self) -> None:
        """The timer: fail the connection if its oldest call is past its deadline, else
        wait for the deadline of the oldest (one timer per connection, not per call)."""
        self._watch = None
        if self.failed is not None or not self.pending:
            return
        loop = asyncio.get_running_loop()
        deadline = self.pending[0][1]
        if deadline <= loop.time():
            self.fail(TimeoutError(f"no answer from Redis within {self.timeout:g} s"))
        else:
            self._watch = loop.call_at(deadline, self._check)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pending = self.pending
        pos = 0
        try:
            while pos < len(buf):
                value, pos = parse(buf, pos)
                if not pending:
                    raise ConnectionError("a reply from Redis that no call waits for")
                future, _deadline = pending.popleft()
                if not future.done():  # done: its call was abandoned (cancelled)
                    future.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError, IndexError) as exc:
            self.fail(ConnectionError(f"the connection to Redis is out of step: {exc}"))
            return
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"the connection to Redis was lost{f': {exc}' if exc else ''}"))

    def fail(self, exc: Exception) -> None:
        """Close the connection and fail every call waiting on it (their outcome is
        unknown: none is sent again)."""
        if self.failed is not None:
            return
        self.failed = exc
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        pending, self.pending = self.pending, collections.deque()
        for future, _deadline in pending:
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


class RespConnection:
    """``await conn.call(b"FCALL", …)`` on one pipelined connection to ``url``."""

    def __init__(self, url: str, *, timeout: float) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._ssl = url.lower().startswith("rediss://")
        self._setup: list[tuple[bytes | str | int, ...]] = []
        password, username = options.get("password"), options.get("username")
        if password is not None:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        db = int(options.get("db", 0) or 0)
        if db:
            self._setup.append(("SELECT", db))
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        return await self.call_encoded(encode(args))

    async def call_encoded(self, command: bytes) -> Any:
        """``call`` with the command already encoded (``encode``): a caller that sends
        the same command often encodes it once."""
        protocol = self._protocol
        if protocol is None or protocol.failed is not None:
            protocol = await self._connect()
        value = await protocol.send(command, asyncio.get_running_loop())
        if isinstance(value, ResponseError):
            raise value
        return value

    async def _connect(self) -> _Protocol:
        connecting = self._connecting
        if connecting is not None:
            return await asyncio.shield(connecting)
        loop = asyncio.get_running_loop()
        self._connecting = connecting = loop.create_future()
        opened: _Protocol | None = None
        try:
            async with asyncio.timeout(self._timeout):
                protocol = opened = await self._open(loop)
                for command in self._setup:
                    value = await protocol.send(encode(command), loop)
                    if isinstance(value, ResponseError):
                        raise value
        except BaseException as exc:
            if opened is not None:
                opened.fail(ConnectionError("the connection to Redis could not be set up"))
            error = exc
            if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                error = TimeoutError(f"could not connect to Redis within {self._timeout:g} s")
            elif isinstance(exc, OSError):
                error = ConnectionError(f"could not connect to Redis: {exc}")
            connecting.set_exception(error)
            connecting.exception()
            self._connecting = None
            if error is exc:
                raise
            raise error from exc
        self._protocol = protocol
        self._connecting = None
        connecting.set_result(protocol)
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        def factory() -> _Protocol:
            return _Protocol(self._timeout)

        if self._path is not None:
            transport, protocol = await loop.create_unix_connection(factory, self._path)
        else:
            context = ssl.create_default_context() if self._ssl else None
            transport, protocol = await loop.create_connection(factory, self._host, self._port, ssl=context)
        protocol.transport = transport
        return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(ConnectionError("the connection to Redis was closed"))
