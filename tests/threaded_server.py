"""A test server's event loop in a thread of its own, for fakes that tests drive from
synchronous code (the fake upstream, the fake GitHub and Google): ``start`` returns
once ``_startup`` has run (or raises what it raised), ``stop`` runs ``_shutdown`` on
that loop and joins the thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

START_TIMEOUT = 10.0
"""Seconds a fake has to start, and to stop."""


class ThreadedServer:
    label = "the fake server"
    """Names the server in errors and its thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    async def _startup(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.label.replace(" ", "-"), daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"{self.label} did not start within {START_TIMEOUT:g} s")
        if self._startup_error is not None:
            raise RuntimeError(f"{self.label} failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(timeout=START_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=START_TIMEOUT)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
