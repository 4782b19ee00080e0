"""The body reader (agentrouter.request_body): strict Content-Length, the size limit
before and while reading, and the idle and total timeouts, on one timer per reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentrouter.request_body import BodyError, BodyReader

Receive = Callable[[], Awaitable[dict[str, Any]]]


def reader(limit: int = 1024, idle: float = 0.2, total: float = 1.0) -> BodyReader:
    return BodyReader(limit, idle_timeout=idle, total_timeout=total)


def parts(*chunks: bytes, silent: bool = False) -> tuple[Receive, list[int]]:
    """A receive that hands out ``chunks`` and counts its calls; ``silent``: the last
    chunk says more is coming, and then nothing ever comes (a client gone silent)."""
    calls = [0]
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        calls[0] += 1
        if not pending:
            await asyncio.Event().wait()
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending) or silent}

    return receive, calls


async def test_one_message_and_several() -> None:
    r = reader()
    receive, _ = parts(b'{"a": 1}')
    assert await r.read(receive, b"8") == b'{"a": 1}'
    receive, _ = parts(b'{"a"', b": 1", b"}")
    assert await r.read(receive, None) == b'{"a": 1}'
    assert r._timer is not None  # armed while reading, then it stops by itself
    await asyncio.sleep(r._tick * 2)
    assert r._timer is None


@pytest.mark.parametrize("value", [b"+5", b"-1", b"1_0", b"0x10", b"", b"1e3", b"5, 5", b"\xd9\xa3"])
async def test_a_content_length_that_is_not_digits_is_400(value: bytes) -> None:
    receive, calls = parts(b"12345")
    with pytest.raises(BodyError) as exc:
        await reader().read(receive, value)
    assert exc.value.status == 400 and not exc.value.close
    assert calls == [0]


async def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    for declared in (b"1025", b"1000000000", b"9" * 40):
        receive, calls = parts(b"x" * 100)
        with pytest.raises(BodyError) as exc:
            await reader(limit=1024).read(receive, declared)
        assert (exc.value.status, exc.value.close, calls) == (413, True, [0])


async def test_a_body_growing_past_the_limit_is_413_without_reading_the_rest() -> None:
    receive, calls = parts(*([b"x" * 400] * 10))
    with pytest.raises(BodyError) as exc:
        await reader(limit=1024).read(receive, None)
    assert (exc.value.status, exc.value.close) == (413, True)
    assert calls == [3]
    receive, _ = parts(b"x" * 1024)
    assert len(await reader(limit=1024).read(receive, None)) == 1024


async def test_a_client_gone_silent_is_408_after_the_idle_timeout() -> None:
    r = reader(idle=0.2, total=5.0)
    for chunks in ((), (b'{"model": ',)):  # silent from the start, or after a first chunk
        receive, _ = parts(*chunks, silent=True)
        started = time.monotonic()
        with pytest.raises(BodyError) as exc:
            await asyncio.wait_for(r.read(receive, b"100"), 5)
        waited = time.monotonic() - started
        assert (exc.value.status, exc.value.close) == (408, True)
        assert "sent nothing for 0.2 seconds" in str(exc.value)
        assert 0.2 <= waited < 0.2 + 2 * r._tick + 0.5, waited


async def test_a_trickle_is_408_after_the_total_timeout() -> None:
    r = reader(idle=0.2, total=0.6)

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.05)  # a byte every 50 ms: never idle for 0.2 s
        return {"type": "http.request", "body": b"x", "more_body": True}

    started = time.monotonic()
    with pytest.raises(BodyError) as exc:
        await asyncio.wait_for(r.read(trickle, None), 5)
    assert exc.value.status == 408 and "within 0.6 seconds" in str(exc.value)
    assert 0.6 <= time.monotonic() - started < 0.6 + 2 * r._tick + 0.5


async def test_many_reads_share_one_timer_and_time_out_alone() -> None:
    r = reader(idle=0.2, total=5.0)
    silent = [parts(b"{", silent=True)[0] for _ in range(20)]
    fine, _ = parts(b"{", b"}")
    tasks = [asyncio.create_task(r.read(receive, None)) for receive in silent]
    await asyncio.sleep(0)
    timer = r._timer
    assert timer is not None and len(r._active) == 20
    assert await r.read(fine, None) == b"{}"
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(e, BodyError) and e.status == 408 for e in results)
    assert not r._active


async def test_another_cancellation_is_not_a_timeout() -> None:
    receive, _ = parts(silent=True)
    task = asyncio.create_task(reader(idle=5.0, total=10.0).read(receive, None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_disconnect_is_400() -> None:
    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(BodyError) as exc:
        await reader().read(gone, None)
    assert exc.value.status == 400
