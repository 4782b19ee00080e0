"""The usage writer: a child process of each gateway worker that writes the worker's
usage batches (key totals and request-log rows, ``Store.add_usage``) to the store.

Why a process of its own: a batch costs SQLite and Python about 6 µs of CPU per
request-log row, i.e. a burst of 15 ms or more every second at a few thousand
requests per second. Done in a thread of the serving process, that burst holds the
GIL in short turns that the event loop waits for up to the switch interval (5 ms),
and it shows in the gateway's latency: the 1-connection p99 of the load benchmark
went from +0.43 ms to +2.3 ms. In a process at nice 10 that writes the log rows in
chunks and yields the CPU between them (``Store.add_usage(pause=os.sched_yield)``),
a request that arrives meanwhile waits at most one chunk, and the writer still gets
its share of a saturated CPU.

The pipe protocol (the parent is the only writer of the child's stdin and the only
reader of its stdout)::

    child  -> parent   b"ready\\n"                      the store is open
    parent -> child    4-byte big-endian length, msgpack ``Batch``
    child  -> parent   b"ok <seq>\\n"                   committed
                       b"error <seq> <message>\\n"      rolled back: nothing written

The child exits when its stdin closes: after the parent's last batch, or when the
parent died. It ignores SIGINT and SIGTERM, so a Ctrl-C sent to the whole process
group cannot stop it before the parent has handed over its last batch.

If the child dies, the batch in hand fails (the recorder keeps it and tries again)
and the next batch starts a new child. Each batch carries the recorder's batch id,
which the store commits with it: a child killed between its commit and its answer
makes the recorder send the batch again, and the store skips it (no double count).

The child opens the store the parent names (``AGENTROUTER_USAGE_WRITER_STORE`` in
its environment, never on its command line where ``ps`` would show a password): a
SQLite file, or a PostgreSQL URL, which it reaches through one connection made when
a batch needs it, so a child starts while PostgreSQL is down and its batches fail
(and are kept by the recorder) until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from agentrouter.store.models import RequestRecord, UsageDelta

if TYPE_CHECKING:
    from agentrouter.store.base import Store

__all__ = ["NICE", "Batch", "UsageWriter", "UsageWriterError"]

log = logging.getLogger("agentrouter.usage")

NICE = 10
"""The child's niceness: the serving loop comes first, and the child still gets
about a tenth of a saturated CPU (it needs a few per cent)."""

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 30


YIELD_BUDGET = 0.5
"""Seconds: when the previous batch took longer than this from send to answer, the
writer is behind (a saturated CPU), and the next batch is written without yielding
between chunks, at the child's full fair share."""


class Batch(msgspec.Struct, array_like=True):
    seq: int
    deltas: list[UsageDelta]
    requests: list[RequestRecord]
    yield_cpu: bool = True
    """Yield the CPU between chunks of log rows (false: the writer is behind)."""
    id: str | None = None
    """The recorder's batch id: committed with the batch, a batch sent again is skipped."""


STORE_ENV = "AGENTROUTER_USAGE_WRITER_STORE"
TIMEOUT_ENV = "AGENTROUTER_USAGE_WRITER_TIMEOUT"


class UsageWriterError(Exception):
    """A batch was not written (the child refused it, died or did not answer)."""


def _package_root() -> str:
    import agentrouter

    return str(Path(agentrouter.__file__).resolve().parent.parent)


class UsageWriter:
    """The parent's side: a ``UsageRecorder`` sink that hands each batch to the child
    and returns once the child has committed it.

    Batches go one at a time (the recorder flushes under a lock), so every answer
    belongs to the batch in hand.
    """

    def __init__(
        self,
        store: Path | str,
        *,
        start_timeout: float = 30.0,
        answer_timeout: float = 300.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """``store``: a SQLite file, or a ``postgresql://`` URL."""
        self.store = str(store)
        self._connect_timeout = connect_timeout
        self._start_timeout = start_timeout
        self._answer_timeout = answer_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._seq = 0
        self._encode = msgspec.msgpack.Encoder().encode
        self.spawned = 0
        """Children started so far (more than one: a child died and was replaced)."""
        self.last_duration = 0.0
        """Seconds the last batch took from send to answer."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the child and wait until its store is open (an error if it cannot)."""
        if self._proc is not None and self._proc.returncode is None:
            return
        env = dict(os.environ)
        # The child imports the same agentrouter as this process, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        env[STORE_ENV] = self.store
        env[TIMEOUT_ENV] = repr(self._connect_timeout)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentrouter.store.writer",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self.spawned += 1
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self._start_timeout)
        except BaseException:
            await _stop(proc, 0)
            raise
        if line != b"ready\n":
            code = await _stop(proc, 5)
            raise UsageWriterError(f"the usage writer did not start (exit status {code}; its error is above)")
        self._proc = proc

    async def __call__(
        self, deltas: Sequence[UsageDelta], requests: Sequence[RequestRecord], *, batch_id: str | None = None
    ) -> None:
        """Write one batch; raises ``UsageWriterError`` when it was not written."""
        if self._proc is None or self._proc.returncode is not None:
            await self._discard()
            await self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        self._seq += 1
        seq = self._seq
        frame = self._encode(Batch(seq, list(deltas), list(requests), self.last_duration <= YIELD_BUDGET, batch_id))
        started = time.monotonic()
        try:
            proc.stdin.write(_HEADER.pack(len(frame)))
            proc.stdin.write(frame)
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), self._answer_timeout)
        except (OSError, TimeoutError) as exc:  # BrokenPipe, ConnectionReset: the child is gone
            await self._discard()
            raise UsageWriterError(f"the usage writer failed ({exc!r}); it is restarted for the next batch") from exc
        self.last_duration = time.monotonic() - started
        if line == b"ok %d\n" % seq:
            return
        if line.startswith(b"error %d " % seq):
            raise UsageWriterError(line.split(b" ", 2)[2].decode(errors="replace").strip())
        await self._discard()
        if not line:
            raise UsageWriterError("the usage writer exited; it is restarted for the next batch")
        raise UsageWriterError(f"the usage writer answered {line[:200]!r}; it is restarted for the next batch")

    async def close(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a grace period, then kill
        """Let the child finish and exit (its stdin closed), then reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        code = await _stop(proc, timeout)
        if code not in (0, None):
            log.error("the usage writer exited with status %s", code)

    async def _discard(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            code = await _stop(proc, 0)
            log.error("usage writer (pid %d) stopped with status %s", proc.pid, code)


async def _stop(proc: asyncio.subprocess.Process, timeout: float) -> int | None:  # noqa: ASYNC109 - as in close
    """Close the child's stdin, wait up to ``timeout`` for it to exit, else kill it."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    if timeout > 0:
        try:
            return await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.error("the usage writer (pid %d) did not exit within %.0f s; killing it", proc.pid, timeout)
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    return await proc.wait()


# --------------------------------------------------------------------------- the child


async def _open(target: str, connect_timeout: float) -> Store:
    if target.startswith(("postgresql://", "postgres://")):
        from agentrouter.store.postgres import PostgresStore

        return await PostgresStore.open(target, min_size=0, max_size=1, connect_timeout=connect_timeout, check=False)
    from agentrouter.store.sqlite import SqliteStore

    return await SqliteStore.open(Path(target))


async def _serve(target: str, connect_timeout: float) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 16)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    decode = msgspec.msgpack.Decoder(Batch).decode
    out = sys.stdout.buffer.fileno()
    pause = getattr(os, "sched_yield", None)
    store = await _open(target, connect_timeout)
    try:
        os.write(out, b"ready\n")
        while True:
            try:
                header = await reader.readexactly(_HEADER.size)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    log.error("usage writer: the parent closed the pipe in the middle of a batch")
                return 0  # stdin closed: the parent is done
            (size,) = _HEADER.unpack(header)
            if size > _MAX_FRAME:
                log.error("usage writer: a batch of %d bytes is past the limit; stopping", size)
                return 1
            batch = decode(await reader.readexactly(size))
            try:
                await store.add_usage(
                    batch.deltas, batch.requests, batch_id=batch.id, pause=pause if batch.yield_cpu else None
                )
            except Exception as exc:  # rolled back: the parent keeps the batch
                log.exception(
                    "usage writer: batch %d (%d keys, %d requests) was not written",
                    batch.seq,
                    len(batch.deltas),
                    len(batch.requests),
                )
                message = " ".join(f"{type(exc).__name__}: {exc}".split())
                os.write(out, b"error %d %s\n" % (batch.seq, message.encode()[:1000]))
                continue
            os.write(out, b"ok %d\n" % batch.seq)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    target = os.environ.get(STORE_ENV)
    if args or not target:
        print(f"usage: {STORE_ENV}=DATABASE python -m agentrouter.store.writer", file=sys.stderr)
        return 2
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, "5"))
    except ValueError:
        timeout = 5.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:
        pass
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [usage writer] %(message)s")
    try:
        return asyncio.run(_serve(target, timeout))
    except Exception:
        from agentrouter.config import redact_url

        log.exception("usage writer: cannot serve %s", redact_url(target))
        return 1


if __name__ == "__main__":
    sys.exit(main())
