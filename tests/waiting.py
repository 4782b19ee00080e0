"""Bounded polling: wait for a condition, never for a fixed time.

A test that sleeps "long enough" for something to happen fails on a loaded machine
and wastes time on an idle one. These return as soon as the condition holds and fail
with a message (not a hang) when it has not held within ``within`` seconds, a bound
far above what the condition normally takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL = 0.01
"""Seconds between two looks at the condition."""

WITHIN = 10.0


async def until(condition: Callable[[], bool], what: str, *, within: float = WITHIN) -> None:
    """Return once ``condition()`` is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:g} s for {what}")
        await asyncio.sleep(POLL)


async def until_async(condition: Callable[[], Awaitable[bool]], what: str, *, within: float = WITHIN) -> None:
    """``until`` for a condition that must be awaited (a store query, a request)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:g} s for {what}")
        await asyncio.sleep(POLL)


def until_sync(condition: Callable[[], bool], what: str, *, within: float = WITHIN, poll: float = POLL) -> None:
    """``until`` for tests that are not coroutines."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:g} s for {what}")
        time.sleep(poll)
