"""SIGTERM under load: in-flight requests (streams included) are drained and their
usage is flushed, so requests answered == requests stored for the key == rows in the
request log (written in the same transaction as the totals)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrouter.datadir import DB_FILE
from agentrouter.store import SqliteStore
from tests.e2e.conftest import async_client, start_gateway
from tests.upstream_fake import FakeUpstream
from tests.waiting import until

MESSAGES = [{"role": "user", "content": "Hello!"}]
N = 60
SPREAD = 1.2
"""Seconds over which the N requests start."""
IN_FLIGHT = 12
"""SIGTERM is sent once this many requests have reached the upstream (so, mid-way)."""


@pytest.mark.slow
async def test_sigterm_under_load_loses_no_usage(tmp_path: Path, fake: FakeUpstream, down_url: str) -> None:
    fake.on("gpt-drain", delay=0.4)
    fake.on("claude-drain", chunk_delay=0.08, chunks=6)
    gw = await asyncio.to_thread(start_gateway, tmp_path, fake, down_url)
    try:
        created = await asyncio.to_thread(gw.create_key, name="drain")
        key = created["key"]
        mark = fake.mark()
        term_at: list[float] = []
        errors: list[str] = []

        async def one(i: int) -> tuple[int, float] | None:
            """(status, time answered), or None when the request was not answered."""
            await asyncio.sleep(i * SPREAD / N)
            try:
                async with async_client() as client:
                    if i % 2:
                        resp = await client.post(
                            gw.url + "/v1/chat/completions",
                            json={"model": "gpt-drain", "messages": MESSAGES},
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        if resp.status_code == 200:
                            assert resp.json()["choices"][0]["message"]["content"]
                        return resp.status_code, time.monotonic()
                    async with client.stream(
                        "POST",
                        gw.url + "/v1/messages",
                        json={"model": "claude-drain", "max_tokens": 8, "stream": True, "messages": MESSAGES},
                        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                    ) as resp:
                        body = await resp.aread()
                    if resp.status_code == 200:
                        assert body.rstrip().endswith(b'data: {"type":"message_stop"}'), body[-200:]
                    return resp.status_code, time.monotonic()
            except httpx.TransportError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

        async def terminate() -> None:
            await until(lambda: len(fake.since(mark)) >= IN_FLIGHT, f"{IN_FLIGHT} requests at the upstream", within=20)
            gw.terminate()
            term_at.append(time.monotonic())

        results, _ = await asyncio.gather(asyncio.gather(*(one(i) for i in range(N))), terminate())
        returncode = await asyncio.to_thread(gw.wait)
    finally:
        await asyncio.to_thread(gw.stop)

    answered = [r for r in results if r is not None]
    ok = [r for r in answered if r[0] == 200]
    forwarded = fake.since(mark)
    summary = (
        f"{len(answered)} of {N} answered ({sum(t > term_at[0] for _, t in answered)} after SIGTERM); "
        f"upstream got {len(forwarded)}, {sum(r.finished for r in forwarded)} finished, "
        f"{sum(r.closed_early for r in forwarded)} closed early; client errors: {sorted(set(errors))[:5]}"
    )
    assert returncode == 0, gw.log_tail()
    # Drained requests succeed; one that arrives while the server shuts down may be told so (503).
    assert {status for status, _ in answered} <= {200, 503}, summary
    assert any(t > term_at[0] for _, t in answered), "no in-flight request was drained after SIGTERM: " + summary
    assert not any(r.closed_early for r in forwarded), "an in-flight upstream request was cut: " + summary
    assert len(answered) < N, "SIGTERM came too late to test anything: " + summary

    # The server has exited: what the store holds now is all it will ever hold.
    usage: dict[str, Any] = (await asyncio.to_thread(gw.show, created["id"]))["usage"]
    assert usage["requests"] == len(answered), summary
    assert usage["successes"] == len(ok), summary
    finished = [r for r in forwarded if r.finished and r.usage is not None]
    assert len(finished) == len(ok), summary
    assert usage["input_tokens"] == sum(r.usage[0] for r in finished)
    assert usage["output_tokens"] == sum(r.usage[1] for r in finished)

    # The request log: one row per answered request, the same figures as the totals.
    rows, statuses, tokens_in, tokens_out = await request_log(gw.data_dir / DB_FILE, created["id"])
    assert rows == len(answered) == usage["requests"], summary
    assert statuses == sorted(status for status, _ in answered), summary
    assert (tokens_in, tokens_out) == (usage["input_tokens"], usage["output_tokens"])


async def request_log(db: Path, key_id: str) -> tuple[int, list[int], int, int]:
    """(rows, their statuses sorted, input tokens, output tokens) of a key's request log."""
    store = await SqliteStore.open(db)
    try:
        found = list(
            await store._db.execute_fetchall(
                "SELECT status, input_tokens, output_tokens FROM request_log WHERE key_id = ?", (key_id,)
            )
        )
    finally:
        await store.close()
    return (len(found), sorted(r[0] for r in found), sum(r[1] for r in found), sum(r[2] for r in found))
