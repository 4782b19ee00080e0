"""Reading a request body under the size limit and the body timeouts, for every edge.

``BodyReader.read(receive, content_length)`` returns the body or raises ``BodyError``:

* a ``Content-Length`` that is not plain digits → 400;
* a ``Content-Length`` above the limit → 413 at once, before anything is read (a
  1 GB declaration is refused without waiting for 1 GB); a body without one that
  grows past the limit → 413 as soon as it does;
* no chunk for ``idle_timeout`` seconds (before the first one too), or not all of it
  within ``total_timeout`` → 408;
* the client leaving half-way → 400 (nobody reads that answer; it is counted).

The 408s and 413s leave the rest of the body unread, so the edge answers them with
``Connection: close`` (``BodyError.close``): Granian (hyper) then closes the
connection after the answer instead of waiting for the bytes it would have to skip.

The timeouts cost the hot path one dict insertion and removal per request: one timer
per reader (``tick`` seconds, armed only while a body is being read) sweeps the reads
in progress and cancels those past their deadline. A timer per request
(``loop.call_later`` and its cancel) measured about 3 µs here, most of what reading a
small body costs. Deadlines are therefore coarse: a read is cancelled between
``timeout`` and ``timeout + 2·tick`` seconds after its last progress.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from agentrouter.asgi import Receive
from agentrouter.errors import AgentRouterError

__all__ = ["BodyError", "BodyReader"]

BodyProblem = Literal["too_large", "timeout", "bad_length", "disconnected"]
_STATUS: dict[BodyProblem, int] = {"too_large": 413, "timeout": 408, "bad_length": 400, "disconnected": 400}
_MAX_TICK = 1.0
_MAX_DIGITS = 18  # below 2**63: any larger declaration is over every limit anyway


class BodyError(AgentRouterError):
    """The body was refused; ``status`` is the answer's, ``close`` whether the
    connection must be closed after it (the rest of the body was not read)."""

    def __init__(self, problem: BodyProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.status = _STATUS[problem]
        self.close = problem in ("too_large", "timeout")


class BodyReader:
    """Reads bodies of at most ``limit`` bytes; one per app (per worker process)."""

    def __init__(self, limit: int, *, idle_timeout: float, total_timeout: float) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self._tick = min(_MAX_TICK, idle_timeout / 4)
        # The reads in progress: task → the (coarse) time of its last progress, and
        # for bodies of several chunks, task → when the read started.
        self._active: dict[asyncio.Task[Any], float] = {}
        self._started: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._now = 0.0  # the loop's time at the last sweep (or arming)

    def too_large(self) -> BodyError:
        return BodyError("too_large", f"The request body is larger than the limit of {self.limit} bytes.")

    async def read(
        self, receive: Receive, content_length: bytes | None, task: asyncio.Task[Any] | None = None
    ) -> bytes:
        """The body; ``task`` is the current task (given by callers that have it at hand:
        looking it up costs more than the rest of this bookkeeping)."""
        limit = self.limit
        if content_length is not None:
            if not content_length.isdigit():  # int() would take "+5", "-1", "1_0"
                content_length = content_length.strip()
                if not content_length.isdigit():
                    raise BodyError("bad_length", "Invalid Content-Length header: expected a number of bytes.")
            if len(content_length) > _MAX_DIGITS or int(content_length) > limit:
                raise self.too_large()
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        if self._timer is None:
            self._arm()
        active = self._active
        active[task] = self._now
        try:
            message = await receive()
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                if message["type"] == "http.disconnect":
                    raise BodyError("disconnected", "The client closed the connection before sending the body.")
                if len(body) > limit:
                    raise self.too_large()
                return body
            self._started[task] = active[task]
            parts = [body]
            size = len(body)
            more = True
            while more:
                if size > limit:
                    raise self.too_large()
                active[task] = self._now
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyError("disconnected", "The client closed the connection while sending the body.")
                chunk = message.get("body", b"")
                size += len(chunk)
                parts.append(chunk)
                more = message.get("more_body", False)
            if size > limit:
                raise self.too_large()
            return b"".join(parts)
        except asyncio.CancelledError:
            if task in self._expired and task.uncancel() == 0:
                raise self._timed_out(task) from None
            raise
        finally:
            active.pop(task, None)
            if self._started:
                self._started.pop(task, None)
            if self._expired:
                self._expired.discard(task)

    def _timed_out(self, task: asyncio.Task[Any]) -> BodyError:
        started = self._started.get(task)
        if started is not None and started <= self._now - self.total_timeout - self._tick:
            what = f"The request body did not arrive within {self.total_timeout:g} seconds."
        else:
            what = f"The client sent nothing for {self.idle_timeout:g} seconds while sending the request body."
        return BodyError("timeout", what)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._now = loop.time()
        self._timer = loop.call_later(self._tick, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # Stamps are up to one tick older than the events they mark: allow one more.
        now = self._now = loop.time()
        idle_before = now - self.idle_timeout - self._tick
        start_before = now - self.total_timeout - self._tick
        started = self._started
        for task, last in list(self._active.items()):
            if last <= idle_before or started.get(task, now) <= start_before:
                self._expired.add(task)
                del self._active[task]
                task.cancel()
        self._timer = loop.call_later(self._tick, self._sweep, loop) if self._active else None

    def close(self) -> None:
        """Stop the timer (at shutdown; reads still in progress are the app's to cancel)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
