"""``/v1`` latency at one connection, without and with 20 concurrent sign-ins, against
one worker, from one run.

Starts ``agentrouter serve --workers 1`` (the built-in mock provider, SQLite, loopback)
on a fresh data directory, makes an inference key and 20 users, then:

1. *quiet*: one client sends ``POST /v1/chat/completions`` back to back for
   ``--seconds`` and records each latency;
2. *sign-ins*: the same, while 20 other connections sign in with email and password
   in a loop (each a real Argon2id verification at the default parameters).

Sign-in hashing runs in the accounts service's thread pool, off the event loop, so the
``/v1`` figures of both phases should stay close. Prints p50/p99 of each phase and
the sign-ins per second. The throttle is raised for the run (a throttled attempt
costs no hashing and would measure nothing).

    python benches/signin_latency.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SECRET = "bench-signin-secret-0123456789abcdef0123456789"
PASSWORD = "Velvet-Harbor-42-Quince"
SIGNERS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed(env: dict[str, str]) -> str:
    from agentrouter.actor import INSTANCE
    from agentrouter.config import load_settings
    from agentrouter.core import Core

    core = await Core.from_settings(load_settings(env=env))
    try:
        assert core.accounts is not None
        for i in range(SIGNERS):
            await core.accounts.create_user(INSTANCE, email=f"bench{i}@example.com", password=PASSWORD)
        return (await core.keys.create(name="bench")).key
    finally:
        await core.close()


async def v1_loop(url: str, key: str, seconds: float) -> list[float]:
    from agentrouter.gateway.mock import MODELS

    body = {"model": MODELS[0], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        for _ in range(20):  # warm the connection and the key table
            (await client.post("/v1/chat/completions", json=body)).raise_for_status()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            resp = await client.post("/v1/chat/completions", json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            resp.raise_for_status()
    return latencies


async def signer(url: str, i: int, stop: asyncio.Event, done: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"origin": url}) as client:
        while not stop.is_set():
            resp = await client.post(
                "/api/v1/auth/signin", json={"email": f"bench{i}@example.com", "password": PASSWORD}
            )
            if resp.status_code != 200:
                raise RuntimeError(f"sign-in answered {resp.status_code}: {resp.text}")
            client.cookies.clear()
            done.append(1)


async def measure(url: str, key: str, seconds: float) -> None:
    quiet = await v1_loop(url, key, seconds)
    stop = asyncio.Event()
    done: list[int] = []
    signers = [asyncio.create_task(signer(url, i, stop, done)) for i in range(SIGNERS)]
    await asyncio.sleep(0.5)  # every signer hashing
    started = len(done)
    t0 = time.perf_counter()
    busy = await v1_loop(url, key, seconds)
    elapsed = time.perf_counter() - t0
    rate = (len(done) - started) / elapsed
    stop.set()
    await asyncio.gather(*signers)

    def line(name: str, values: list[float]) -> str:
        return (
            f"{name:<28} n={len(values):>6}  p50={percentile(values, 0.50):7.2f} ms  "
            f"p99={percentile(values, 0.99):7.2f} ms  mean={statistics.fmean(values):7.2f} ms"
        )

    print(line("/v1 alone (1 connection)", quiet))
    print(line(f"/v1 + {SIGNERS} concurrent sign-ins", busy))
    print(f"{'sign-ins completed':<28} {rate:.1f} per second during the second phase")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each phase (default 6)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ar-bench-signin-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
        env.update(
            {
                "AGENTROUTER_DATA_DIR": str(data),
                "AGENTROUTER_SECRET": SECRET,
                "AGENTROUTER_PUBLIC_URL": url,
                "AGENTROUTER_ACCOUNTS_SIGNIN_ACCOUNT_ATTEMPTS": "1000000",
                "AGENTROUTER_ACCOUNTS_SIGNIN_IP_ATTEMPTS": "1000000",
                "AGENTROUTER_MONITOR_ENABLED": "false",
            }
        )
        key = asyncio.run(seed(env))
        cmd = [sys.executable, "-m", "agentrouter.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [*cmd, "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 45
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    print((Path(tmp) / "serve.log").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(f"one worker, {os.cpu_count()} CPUs, {args.seconds:g} s per phase")
            asyncio.run(measure(url, key, args.seconds))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
