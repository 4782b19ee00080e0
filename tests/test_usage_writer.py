"""The usage writer process (``agentrouter.store.writer``): each gateway worker's
usage batches are written by a child process on the same SQLite file.

Real processes and a real database file throughout: the child is started with the
interpreter running the tests, killed with real signals, and what it wrote is read
back through the parent's own store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentrouter.core import Core
from agentrouter.gateway.usage import UsageRecorder
from agentrouter.store.analytics import WRITE_CHUNK
from agentrouter.store.models import RequestRecord, UsageDelta
from agentrouter.store.writer import NICE, UsageWriter, UsageWriterError
from tests.waiting import until

from .conftest import SECRET, open_core


@pytest.fixture
async def writer(core: Core) -> AsyncIterator[UsageWriter]:
    w = UsageWriter(core.store.path)
    await w.start()
    try:
        yield w
    finally:
        await w.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped yet) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def new_key(core: Core) -> str:
    return (await core.keys.create(name="written")).row.id


def records(key: str, n: int) -> list[RequestRecord]:
    now = time.time()
    return [
        RequestRecord(
            key_id=key,
            time=now,
            model="gpt-4o",
            status=200 if i % 4 else 500,
            latency_ms=1.5,
            input_tokens=3,
            output_tokens=5,
            client_ip="10.1.2.3",
            user_agent="test",
        )
        for i in range(n)
    ]


async def test_a_batch_is_committed_by_a_separate_process_at_lower_priority(core: Core, writer: UsageWriter) -> None:
    key = await new_key(core)
    assert writer.pid is not None and writer.pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, writer.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)
    n = 3 * WRITE_CHUNK + 5  # several chunks, with the yield between them
    await writer(
        [
            UsageDelta(
                key_id=key,
                requests=n,
                successes=n - n // 4 - 1,
                failures_5xx=n // 4 + 1,
                input_tokens=3 * n,
                output_tokens=5 * n,
                latency_ms_total=1.5 * n,
                last_used_at=time.time(),
                last_client_ip="10.1.2.3",
            )
        ],
        records(key, n),
    )
    # Committed before the answer: this process's own connection reads it at once.
    usage = (await core.keys.get(key)).usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.last_client_ip) == (
        n,
        3 * n,
        5 * n,
        "10.1.2.3",
    )
    analytics = core.store
    assert await analytics.count_requests(key) == n
    report = await analytics.usage(since=time.time() - 60, until=time.time() + 60, bucket="hour", key_id=key)
    assert (report.totals.requests, report.totals.failures_5xx) == (n, n // 4 + 1)


async def test_a_refused_batch_changes_nothing_and_the_writer_goes_on(core: Core, writer: UsageWriter) -> None:
    key = await new_key(core)
    pid = writer.pid
    with pytest.raises(UsageWriterError, match="FOREIGN KEY"):
        await writer([UsageDelta(key_id="key_unknown", requests=1)], records(key, 2))
    analytics = core.store
    assert await analytics.count_requests() == 0  # the log rows of the refused batch rolled back too
    await writer([UsageDelta(key_id=key, requests=2)], records(key, 2))
    assert writer.pid == pid and writer.spawned == 1
    assert (await core.keys.get(key)).usage.requests == 2 == await analytics.count_requests()


async def test_a_killed_writer_is_replaced_and_the_recorder_loses_nothing(core: Core, writer: UsageWriter) -> None:
    key = await new_key(core)
    rec = UsageRecorder(writer, interval=60)
    for _ in range(5):
        rec.record(key, 200, 1, 1, 1.0, "10.0.0.1", "m", "ua")
    assert await rec.flush()
    first = writer.pid
    assert first is not None
    for _ in range(7):
        rec.record(key, 200, 1, 1, 1.0, "10.0.0.1", "m", "ua")
    # Killed with no await before the flush: the loop has not learnt of the death
    # yet, so the batch goes to the dead child and fails; the recorder keeps it.
    os.kill(first, signal.SIGKILL)
    assert not await rec.flush()
    assert rec.pending_requests == 7 and rec.pending_records == 7
    assert await rec.flush()  # a new child writes it
    second = writer.pid
    assert writer.spawned == 2 and second not in (None, first)
    # A child that died and was reaped meanwhile is replaced before the batch is sent.
    assert second is not None
    os.kill(second, signal.SIGKILL)
    rec.record(key, 200, 1, 1, 1.0, "10.0.0.1", "m", "ua")
    proc = writer._proc
    assert proc is not None
    await until(lambda: proc.returncode is not None, "the event loop to reap the killed writer")
    assert await rec.flush()
    assert writer.spawned == 3 and writer.pid not in (None, first, second)
    assert (await core.keys.get(key)).usage.requests == 13 == await core.store.count_requests(key)


async def test_the_writer_ignores_interrupts_and_exits_when_its_parent_is_done(core: Core, writer: UsageWriter) -> None:
    """Ctrl-C reaches the whole process group: the child must still take the last batch."""
    key = await new_key(core)
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    # Both signals are pending before the batch is written, so the child meets them
    # before it can read the batch: it answers only if it ignores them.
    await writer([UsageDelta(key_id=key, requests=1)], records(key, 1))
    assert writer.pid == pid and writer.spawned == 1 and alive(pid)  # the same child answered
    await writer.close()
    assert not alive(pid)
    assert (await core.keys.get(key)).usage.requests == 1


async def test_a_writer_that_cannot_open_the_store_fails_start_with_a_clear_error(tmp_path: Path) -> None:
    w = UsageWriter(tmp_path / "missing-dir" / "agentrouter.db")
    with pytest.raises(UsageWriterError, match="did not start"):
        await w.start()
    assert w.pid is None


def test_the_writer_exits_when_its_parent_is_killed(core_path: Path) -> None:
    """The parent SIGKILLed (no shutdown at all): its pipe closes and the child exits."""
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from pathlib import Path
        from agentrouter.store.writer import UsageWriter
        async def main():
            w = UsageWriter(Path({str(core_path)!r}))
            await w.start()
            print(w.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    child = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


@pytest.fixture
async def core_path(data_dir: Path) -> Path:
    c = await open_core(data_dir, secret=SECRET)
    path = c.store.path
    await c.close()
    return Path(path)


@pytest.mark.parametrize("mode", ["process", "inline"])
async def test_the_gateway_writes_usage_in_either_mode(tmp_path: Path, mode: str) -> None:
    """``usage_writer``: "process" (the default) starts one child per worker and stops
    it at shutdown; "inline" writes from the worker itself. The same usage either way."""
    from tests.gateway_fixtures import call, settings_for, start_gateway, stored_usage
    from tests.gateway_fixtures import new_key as gateway_key

    env = {} if mode == "process" else {"AGENTROUTER_USAGE_WRITER": "inline"}
    app = await start_gateway(settings_for(tmp_path / "data", **env))
    child = None
    try:
        if mode == "process":
            assert app.usage_writer is not None and app.usage_writer.pid is not None
            child = app.usage_writer.pid
            stat = await asyncio.to_thread(Path(f"/proc/{child}/stat").read_text)
            assert stat.rsplit(")", 1)[1].split()[1] == str(os.getpid())
        else:
            assert app.usage_writer is None
        key, key_id = await gateway_key(app)
        body = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}'
        for _ in range(3):
            reply = await call(
                app, "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, body=body
            )
            assert reply.status == 200
        usage = await stored_usage(app, key_id)
        assert usage.requests == 3 and usage.input_tokens > 0
        assert await app.core.store.count_requests(key_id) == 3
    finally:
        await app.shutdown()
    if child is not None:
        assert not alive(child)
