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
    if kind == 58:  # ':'
        return int(buf[pos + 1 : end]), end + 2
    if kind == 36:  # '$'
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        start = end + 2
        if len(buf) < start + size + 2:
            raise _INCOMPLETE
        return buf[start : start + size], start + size + 2
    if kind == 42:  # '*'
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(count):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # '+'
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # '-'
        return ResponseError(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise ConnectionError(f"unexpected reply from Redis: {bytes(buf[pos : pos + 20])!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespConnection) -> None:
        self.owner = owner
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop calls this a loop turn after create_connection returned; its transports
        # are not asyncio.Transport subclasses.)
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pending = self.owner._pending
        pos = 0
        try:
            while pos < len(buf):
                value, pos = parse(buf, pos)
                if not pending:
                    raise ConnectionError("a reply from Redis that no call waits for")
                future = pending.popleft()
                if not future.done():  # done: its call was abandoned (cancelled)
                    future.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError, IndexError) as exc:
            self.owner._fail(self, ConnectionError(f"the connection to Redis is out of step: {exc}"))
            return
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._fail(self, ConnectionError(f"the connection to Redis was lost{f': {exc}' if exc else ''}"))


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
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def call(self, *args: bytes | str | int) -> Any:
        protocol = self._protocol
        if protocol is None:
            await self._connect()
            protocol = self._protocol  # None again if it failed in between
            if protocol is None:
                raise ConnectionError("the connection to Redis was lost as it opened")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(future)
        assert protocol.transport is not None
        protocol.transport.write(encode(args))
        timer = loop.call_at(loop.time() + self._timeout, self._expire, protocol, future)
        try:
            value = await future
        finally:
            timer.cancel()
        if isinstance(value, ResponseError):
            raise value
        return value

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Any]) -> None:
        if not future.done():
            exc = TimeoutError(f"no answer from Redis within {self._timeout:g} s")
            self._fail(protocol, exc)
            if not future.done():  # the connection was replaced already: fail the call anyway
                future.set_exception(exc)

    def _fail(self, protocol: _Protocol, exc: Exception) -> None:
        """Close ``protocol``'s connection (if it is the current one) and fail every call
        waiting on it."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(exc)
        if protocol.transport is not None:
            protocol.transport.abort()

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
                    await self._raw_call(protocol, command)
        except BaseException as exc:
            if opened is not None and opened.transport is not None:
                opened.transport.abort()
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
            return _Protocol(self)

        if self._path is not None:
            transport, protocol = await loop.create_unix_connection(factory, self._path)
        else:
            context = ssl.create_default_context() if self._ssl else None
            transport, protocol = await loop.create_connection(factory, self._host, self._port, ssl=context)
        protocol.transport = transport
        return protocol

    async def _raw_call(self, protocol: _Protocol, command: tuple[bytes | str | int, ...]) -> Any:
        """A call before the connection is the current one (AUTH, SELECT)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        assert protocol.transport is not None
        protocol.transport.write(encode(command))
        self._protocol = protocol  # so that a failure now fails it
        try:
            value = await future
        finally:
            self._protocol = None
        if isinstance(value, ResponseError):
            raise value
        return value

    def close(self) -> None:
        if self._protocol is not None:
            self._fail(self._protocol, ConnectionError("the connection to Redis was closed"))
