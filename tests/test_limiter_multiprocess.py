"""Several processes (two threads each) draw from one bucket in a shared file:
exactly its capacity is admitted, and a process SIGKILLed while hammering leaves
the region usable and exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentrouter.limiter import RateLimiter
from tests.waiting import until_sync

pytestmark = pytest.mark.slow

CAPACITY = 64
TEN_YEARS = 10 * 365 * 86400.0  # refill of a few cells per decade: negligible here

# argv: region path, bucket name, requests, mode ("drain" | "victim"), go-file.
# drain: print "ready" (the region is open), wait for the go-file, then two threads
# acquire until their first refusal (with negligible refill the bucket never admits
# again); print the total admitted.
# victim: print "ready", then hammer forever in bursts until killed.
WORKER = f"""
import os, sys, threading, time
from agentrouter.limiter import RateLimiter
path, name, requests, mode, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
limiter = RateLimiter(path, capacity={CAPACITY})
def acquire():
    return limiter.acquire(name, requests=requests, interval={TEN_YEARS!r}).allowed
if mode == "victim":
    print("ready", flush=True)
    while True:
        for _ in range(200):
            acquire()
        time.sleep(0.001)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
counts = [0, 0]
def drain(i):
    while acquire():
        counts[i] += 1
threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(counts), flush=True)
"""


def spawn(path: Path, name: str, requests: int, mode: str, go: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", WORKER, str(path), name, str(requests), mode, str(go)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def drain_in_processes(path: Path, name: str, requests: int, processes: int = 4) -> list[int]:
    go = path.with_suffix(f".go-{name}")
    workers = [spawn(path, name, requests, "drain", go) for _ in range(processes)]
    for w in workers:  # all of them have opened the region: start them together
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "ready"
    go.touch()
    counts = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        counts.append(int(out))
    return counts


def test_processes_sharing_a_bucket_admit_exactly_its_capacity(tmp_path: Path) -> None:
    path = tmp_path / "limiter.shm"
    RateLimiter(path, capacity=CAPACITY)
    counts = drain_in_processes(path, "shared", 2000)
    assert sum(counts) == 2000, counts


def test_a_killed_process_leaves_the_region_usable_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "limiter.shm"
    requests = 200_000
    limiter = RateLimiter(path, capacity=CAPACITY)

    def left() -> int:
        # A cost above the limit is refused without writing: a read of what is left.
        remaining = limiter.acquire("shared", requests=requests, interval=TEN_YEARS, cost=requests + 1).remaining
        assert remaining is not None
        return remaining

    victim = spawn(path, "shared", requests, "victim", tmp_path / "unused")
    try:
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "ready"
        # Mid-hammering: at 200 acquires a burst, a few bursts in and far from the end.
        until_sync(lambda: left() < requests - 1000, "the victim to take some of the bucket")
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)  # reaps it and closes its pipes
    assert victim.returncode == -signal.SIGKILL
    remaining = left()
    assert 0 < remaining < requests, "the victim should have been mid-way"
    counts = drain_in_processes(path, "shared", requests)
    assert sum(counts) == remaining, (counts, remaining)
    assert RateLimiter(path, capacity=CAPACITY).acquire("other", requests=1).allowed


# argv: region path, barrier region path, processes, rounds. In each round every
# process waits at a barrier (the barrier region's generation counter: each arrival
# bumps it, all leave when it reaches processes * (round + 1)), then takes one cell
# from that round's fresh bucket of `processes` cells; it prints each round's remaining.
CONCURRENT = """
import os, sys
from agentrouter.limiter import RateLimiter
path, barrier_path, processes, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
limiter = RateLimiter(path, capacity=%d)
barrier = RateLimiter(barrier_path, capacity=1)
seen = []
for r in range(rounds):
    barrier.bump_generation()
    while barrier.generation() < processes * (r + 1):
        os.sched_yield()
    d = limiter.acquire("round-%%d" %% r, requests=processes, interval=%r)
    seen.append(d.remaining if d.allowed else -1)
print(" ".join(map(str, seen)), flush=True)
"""


def test_concurrent_admissions_each_see_their_own_place(tmp_path: Path) -> None:
    """C processes admitted together to a fresh bucket of C see remaining C-1 ... 0, each
    once, round after round (the limiter reads its clock after the bucket's state: a
    process overtaken in between would otherwise count one cell too few)."""
    processes, rounds = 3, 1500
    path, barrier = tmp_path / "limiter.shm", tmp_path / "barrier.shm"
    script = CONCURRENT % (rounds + 64, TEN_YEARS)
    RateLimiter(path, capacity=rounds + 64)
    RateLimiter(barrier, capacity=1)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(barrier), str(processes), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        outputs.append([int(v) for v in out.split()])
    wrong = [(r, seen) for r, seen in enumerate(zip(*outputs, strict=True)) if sorted(seen) != list(range(processes))]
    assert not wrong, f"{len(wrong)} of {rounds} rounds, e.g. {wrong[:5]}"
