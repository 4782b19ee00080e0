"""Snapshot files: how the workers of one server see each other's counters.

Each worker writes ``<data_dir>/metrics/<pid>.json`` about once a second (only when
something moved) and once more at shutdown, off the hot path (``Publisher``, a task
of the worker's loop): its recorder's series in label space, with its own pid, its
server's pid (the worker's parent: Granian's process manager) and its start time.
A file is written beside its final name and renamed over it, so a reader never sees
half of one.

``/metrics`` sums the snapshots of the live workers of the same server
(``read_peers``): the pid must still run, and be the same process (its start time,
from ``/proc``, where there is one: a pid reused by another process does not count),
plus the answering worker's own live recorder. A worker that exited leaves its
counters behind with it: the sum goes down, which Prometheus reads as a counter
reset. ``clear_stale`` (called by ``server.prepare`` when a server starts) removes
the files of processes that are gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

__all__ = ["Merged", "Publisher", "Snapshot", "clear_stale", "merge", "process_start", "read_peers"]

log = logging.getLogger("agentrouter.gateway.metrics")

SUFFIX = ".json"
INTERVAL = 1.0
"""Seconds between two snapshot writes of a worker."""

Sample = tuple[list[str], float]
HistogramSample = tuple[list[str], list[int], float]
"""Labels, the count in each bucket (the last: above every bound), the sum."""


class Snapshot(msgspec.Struct, kw_only=True):
    """One worker's series (only those that moved), by family name (``render.FAMILIES``)."""

    pid: int
    server: int
    started: int
    """The process's start time (clock ticks since boot, ``/proc/<pid>/stat``); 0: unknown."""
    counters: dict[str, list[Sample]] = msgspec.field(default_factory=dict)
    gauges: dict[str, list[Sample]] = msgspec.field(default_factory=dict)
    histograms: dict[str, list[HistogramSample]] = msgspec.field(default_factory=dict)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Snapshot).decode


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (0 where ``/proc`` cannot tell), None when it
    does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0  # alive, another user's: its file will not name our server
        return 0
    try:
        # Fields after the command name (which may hold spaces and parentheses); the
        # start time is field 22 of the line, the 20th after the name.
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return 0


def _alive(snap: Snapshot) -> bool:
    started = process_start(snap.pid)
    return started is not None and (snap.started == 0 or started == 0 or started == snap.started)


def snapshot_path(directory: Path, pid: int) -> Path:
    return directory / f"{pid}{SUFFIX}"


def read_peers(directory: Path, own_pid: int, server: int) -> list[Snapshot]:
    """The snapshots of the other live workers of ``server``."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if not name.endswith(SUFFIX) or name == f"{own_pid}{SUFFIX}":
            continue
        try:
            snap = _decode(Path(entry.path).read_bytes())
        except (OSError, msgspec.DecodeError):
            continue  # removed meanwhile, or not ours
        if snap.server == server and snap.pid != own_pid and _alive(snap):
            found.append(snap)
    return found


def clear_stale(directory: Path) -> int:
    """Remove the snapshot files of processes that are gone; how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        path = Path(entry.path)
        stale = entry.name.endswith(".tmp")
        if entry.name.endswith(SUFFIX):
            try:
                stale = not _alive(_decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError):
                stale = True
        if stale:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


class Merged:
    """Series summed over snapshots: (family, labels) → value (histograms: counts, sum)."""

    __slots__ = ("counters", "gauges", "histograms", "workers")

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[str, ...], float]] = {}
        self.gauges: dict[str, dict[tuple[str, ...], float]] = {}
        self.histograms: dict[str, dict[tuple[str, ...], tuple[list[int], float]]] = {}
        self.workers = 0

    def add(self, snap: Snapshot) -> None:
        self.workers += 1
        for into, source in ((self.counters, snap.counters), (self.gauges, snap.gauges)):
            for name, samples in source.items():
                family = into.setdefault(name, {})
                for labels, value in samples:
                    key = tuple(labels)
                    family[key] = family.get(key, 0) + value
        for name, hsamples in snap.histograms.items():
            hfamily = self.histograms.setdefault(name, {})
            for labels, counts, total in hsamples:
                key = tuple(labels)
                had = hfamily.get(key)
                if had is None:
                    hfamily[key] = (list(counts), total)
                elif len(had[0]) == len(counts):  # else a worker of other buckets: not summable
                    hfamily[key] = ([a + b for a, b in zip(had[0], counts, strict=True)], had[1] + total)


def merge(snapshots: Iterable[Snapshot]) -> Merged:
    merged = Merged()
    for snap in snapshots:
        merged.add(snap)
    return merged


class Publisher:
    """Writes a worker's snapshot file every ``interval`` seconds (when it changed) and at ``close``."""

    def __init__(self, take: Callable[[], Snapshot], directory: Path, interval: float = INTERVAL) -> None:
        self._take = take
        self.directory = directory
        self.path = snapshot_path(directory, os.getpid())
        self._interval = interval
        self._last = b""
        self._task: asyncio.Task[None] | None = None
        self._failed = False

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="agentrouter-metrics-snapshot")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.write()

    def write(self) -> None:
        data = _encode(self._take())
        if data == self._last:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._failed:  # once: a full disk must not fill the log too
                log.warning("cannot write the metrics snapshot %s: %s; /metrics misses this worker", self.path, exc)
                self._failed = True
            return
        self._failed = False
        self._last = data

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.write()
