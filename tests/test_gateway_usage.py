"""Token parsing for both dialects (JSON and streams), the in-memory aggregation with
its batched, loss-free flushing, and the request log written with the key totals."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from agentrouter.gateway.usage import (
    MAX_TOKENS,
    NotJSONObject,
    StreamUsage,
    Tokens,
    UsageRecorder,
    tokens_from_json,
    tokens_from_sse,
)
from agentrouter.store.models import RequestRecord, UsageDelta
from tests.waiting import until

enc = msgspec.json.encode


def sse(obj: object, event: str | None = None) -> bytes:
    return (b"event: " + event.encode() + b"\n" if event else b"") + b"data: " + enc(obj) + b"\n\n"


# ------------------------------------------------------------------ JSON answers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # OpenAI chat / completions
        (
            {
                "id": "x",
                "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 99}'}}],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 34,
                    "total_tokens": 46,
                    "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 3},
                },
            },
            (12, 34),
        ),
        # OpenAI embeddings
        (
            {"object": "list", "data": [{"embedding": [0.1] * 100}], "usage": {"prompt_tokens": 8, "total_tokens": 8}},
            (8, 0),
        ),
        # OpenAI Responses API (usage before other keys)
        (
            {
                "id": "resp",
                "output": [],
                "usage": {
                    "input_tokens": 7,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 9,
                    "total_tokens": 16,
                },
                "user": None,
                "metadata": {},
            },
            (7, 9),
        ),
        # Anthropic message, cache reads and writes count as input
        (
            {
                "id": "msg",
                "type": "message",
                "content": [{"type": "text", "text": "hi"}],
                "usage": {
                    "input_tokens": 10,
                    "cache_creation_input_tokens": 4,
                    "cache_read_input_tokens": 6,
                    "output_tokens": 20,
                    "cache_creation": {"ephemeral_5m_input_tokens": 4},
                    "server_tool_use": None,
                    "service_tier": "standard",
                },
            },
            (20, 20),
        ),
        (
            {
                "id": "msg",
                "usage": {
                    "input_tokens": 10,
                    "cache_creation_input_tokens": None,
                    "cache_read_input_tokens": None,
                    "output_tokens": 2,
                },
            },
            (10, 2),
        ),
        # No usage, null usage, "usage" only as a value
        ({"input_tokens": 31}, (0, 0)),
        ({"id": "x", "usage": None}, (0, 0)),
        ({"object": "usage", "n": 1}, (0, 0)),
    ],
)
def test_tokens_from_json(answer: object, expected: tuple[int, int]) -> None:
    assert tokens_from_json(enc(answer)) == Tokens(*expected)


def test_tokens_from_json_spacing() -> None:
    assert tokens_from_json(b'{"usage" :  {"prompt_tokens" : 3 , "completion_tokens": 4}\n}') == Tokens(3, 4)
    assert tokens_from_json(b'{"usage": 7}') == Tokens(0, 0, ignored=True)  # there, but not an object


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"",
        b'{"usage": {"prompt_tokens": 3}',
        b'{"a": 1} {"b": 2}',
        b"[1]",
        b'"x"',
        b"null",
        b'{"a": "caf\xe9"}',
        b'{"a": "\xff"}',
        b'{"a": NaN}',
        b'{"a": "\\ud800"}',
    ],
)
def test_tokens_from_json_refuses_what_is_no_json_object(body: bytes) -> None:
    """A 2xx JSON answer an SDK could not parse (syntax, UTF-8, not an object) is
    refused in the same pass that finds the usage."""
    with pytest.raises(NotJSONObject):
        tokens_from_json(body)


def test_tokens_from_json_accepts_utf8_and_any_nesting() -> None:
    deep = {"a": [[[[{"b": "é 漢字 🙂"}]]]], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}
    assert tokens_from_json(enc(deep)) == Tokens(2, 1)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": -1, "completion_tokens": 4}, Tokens(0, 4, True)),
        ({"prompt_tokens": 3, "completion_tokens": 1.0}, Tokens(3, 0, True)),
        ({"prompt_tokens": True, "completion_tokens": False}, Tokens(0, 0, True)),
        ({"prompt_tokens": "3", "completion_tokens": [1]}, Tokens(0, 0, True)),
        ({"prompt_tokens": MAX_TOKENS, "completion_tokens": MAX_TOKENS + 1}, Tokens(MAX_TOKENS, 0, True)),
        ({"prompt_tokens": 10**30, "completion_tokens": 2}, Tokens(0, 2, True)),
        (
            {"input_tokens": 5, "cache_creation_input_tokens": -5, "cache_read_input_tokens": 2, "output_tokens": 1},
            Tokens(7, 1, True),
        ),
        ({"prompt_tokens": 0, "completion_tokens": 0}, Tokens(0, 0)),
    ],
)
def test_usage_numbers_that_are_no_counts_count_zero(usage: dict[str, object], expected: Tokens) -> None:
    assert tokens_from_json(enc({"id": "x", "usage": usage})) == expected
    assert tokens_from_sse(sse({"choices": [], "usage": usage})) == expected


def test_tokens_from_large_json() -> None:
    big = {"data": [{"embedding": [0.123456789] * 50_000}], "usage": {"prompt_tokens": 77, "total_tokens": 77}}
    assert tokens_from_json(enc(big)) == Tokens(77, 0)


# ------------------------------------------------------------------ streams


def openai_stream(n: int, include_usage: bool) -> list[bytes]:
    chunks = [
        sse({"id": "c", "choices": [{"delta": {"content": "x"}}], **({"usage": None} if include_usage else {})})
        for _ in range(n)
    ]
    if include_usage:
        chunks.append(
            sse(
                {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
            )
        )
    return [*chunks, b"data: [DONE]\n\n"]


def anthropic_stream(n: int, *, delta_input: bool = False) -> list[bytes]:
    out = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "m",
                    "content": [],
                    "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
                },
            },
            "message_start",
        )
    ]
    out += [
        sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi "}},
            "content_block_delta",
        )
        for _ in range(n)
    ]
    usage: dict[str, int] = {"output_tokens": n}
    if delta_input:
        usage.update(input_tokens=40, cache_read_input_tokens=0)
    out += [
        sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return out


def responses_stream(n: int) -> list[bytes]:
    resp = {"id": "r", "status": "in_progress", "output": [], "usage": None}
    out = [sse({"type": "response.created", "response": resp}, "response.created")]
    out += [
        sse({"type": "response.output_text.delta", "delta": "word "}, "response.output_text.delta") for _ in range(n)
    ]
    done = dict(
        resp,
        status="completed",
        output=[{"content": [{"text": "word " * n}]}],
        usage={"input_tokens": 9, "output_tokens": n, "total_tokens": 9 + n},
    )
    out.append(sse({"type": "response.completed", "response": done}, "response.completed"))
    return out


def meter(chunks: Sequence[bytes], split: int | None = None) -> tuple[int, int]:
    m = StreamUsage()
    data = b"".join(chunks)
    pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else list(chunks)
    for p in pieces:
        m.feed(p)
    inp, out, ignored = m.tokens()
    assert not ignored
    return inp, out


@pytest.mark.parametrize("n", [3, 2000])  # short, and longer than the kept head and tail
@pytest.mark.parametrize("split", [None, 7, 1000])  # event per chunk, or arbitrary network chunks
def test_stream_usage_all_shapes(n: int, split: int | None) -> None:
    assert meter(openai_stream(n, include_usage=True), split) == (5, n)
    assert meter(openai_stream(n, include_usage=False), split) == (0, 0)
    assert meter(anthropic_stream(n), split) == (30, n)
    assert meter(anthropic_stream(n, delta_input=True), split) == (40, n)
    assert meter(responses_stream(n), split) == (9, n)


def test_stream_usage_keeps_bounded_memory() -> None:
    m = StreamUsage()
    for _ in range(10_000):
        m.feed(b"data: " + b"x" * 100 + b"\n\n")
    assert len(m.head) <= StreamUsage.HEAD + 200 and len(m.tail) <= StreamUsage.TAIL


def test_tokens_from_sse_ignores_cut_objects() -> None:
    assert tokens_from_sse(b'data: {"usage": {"prompt_tokens": 3, "comple') == Tokens(0, 0)


# ------------------------------------------------------------------ aggregation


class Sink:
    """``Store.add_usage``'s signature; keeps what each successful flush wrote."""

    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[UsageDelta]] = []
        self.records: list[RequestRecord] = []
        self.ids: list[str] = []
        """The batch id of every call, failed ones included."""
        self.calls = 0
        self.fail = fail

    async def __call__(
        self, deltas: Sequence[UsageDelta], requests: Sequence[RequestRecord] = (), *, batch_id: str = ""
    ) -> None:
        self.calls += 1
        self.ids.append(batch_id)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database is locked")
        self.batches.append(list(deltas))
        self.records.extend(requests)


def totals(sink: Sink) -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = {}
    for batch in sink.batches:
        for d in batch:
            t = out.setdefault(d.key_id, [0] * 6)
            for i, v in enumerate(
                (d.requests, d.successes, d.failures_4xx, d.failures_5xx, d.input_tokens, d.output_tokens)
            ):
                t[i] += v
    return {k: tuple(v) for k, v in out.items()}


async def test_aggregates_per_key_and_status_class() -> None:
    sink = Sink()
    now = [1000.0]
    rec = UsageRecorder(sink, interval=60, clock=lambda: now[0])
    rec.record("k1", 200, 10, 20, 5.0, "10.0.0.1")
    now[0] = 1001.0
    rec.record("k1", 429, 0, 0, 1.0, "10.0.0.2")
    rec.record("k1", 502, 0, 0, 2.0, None)
    rec.record("k2", 404, 0, 0, 1.0, "::1")
    assert rec.pending_requests == 4
    assert await rec.flush()
    assert totals(sink) == {"k1": (3, 1, 1, 1, 10, 20), "k2": (1, 0, 1, 0, 0, 0)}
    d1 = next(d for d in sink.batches[0] if d.key_id == "k1")
    assert d1.latency_ms_total == 8.0 and d1.last_used_at == 1001.0 and d1.last_client_ip == "10.0.0.2"
    assert rec.pending_requests == 0 and await rec.flush() and len(sink.batches) == 1  # nothing new: no write


async def test_failed_write_is_kept_and_retried() -> None:
    sink = Sink(fail=1)
    rec = UsageRecorder(sink, interval=60)
    rec.record("k", 200, 1, 2, 1.0, "1.1.1.1")
    assert not await rec.flush()
    rec.record("k", 200, 1, 2, 1.0, "2.2.2.2")
    assert await rec.flush()
    assert totals(sink) == {"k": (2, 2, 0, 0, 2, 4)}
    # The failed batch is sent again as it was, under its id, before the newer one.
    assert [b[0].last_client_ip for b in sink.batches] == ["1.1.1.1", "2.2.2.2"]
    assert sink.ids[0] == sink.ids[1] != sink.ids[2] and len(set(sink.ids)) == 2


async def test_periodic_flush_and_close_lose_nothing() -> None:
    sink = Sink()
    rec = UsageRecorder(sink, interval=0.05)
    rec.start()
    rec.record("k", 200, 1, 1, 1.0, None)
    await until(lambda: bool(sink.batches), "a batch written by the task")  # no flush() called
    assert totals(sink) == {"k": (1, 1, 0, 0, 1, 1)}
    for _ in range(100):
        rec.record("k", 200, 1, 1, 1.0, None)
    await rec.close()  # the rest, at shutdown
    assert totals(sink) == {"k": (101, 101, 0, 0, 101, 101)}
    assert rec.flushed_requests == 101


async def test_close_retries_a_failing_store() -> None:
    sink = Sink(fail=2)
    rec = UsageRecorder(sink, interval=60)
    rec.start()
    rec.record("k", 500, 0, 0, 1.0, None)
    await rec.close()
    assert totals(sink) == {"k": (1, 0, 0, 1, 0, 0)}


# ------------------------------------------------------------------ the request log


async def test_each_request_is_one_log_record_beside_the_totals() -> None:
    sink = Sink()
    now = [1000.0]
    rec = UsageRecorder(sink, interval=60, clock=lambda: now[0])
    rec.record("k1", 200, 10, 20, 250.0, "10.0.0.1", "gpt-4o", "openai-python/1.0")
    now[0] = 1002.0
    rec.record("k1", 404, 0, 0, 1.0, "10.0.0.2", "no-such-model", None)
    rec.record("k2", 405, 0, 0, 0.5, None)  # refused before the body was read: no model
    assert (rec.pending_requests, rec.pending_records) == (3, 3)
    assert await rec.flush()
    assert sink.records == [
        RequestRecord(
            key_id="k1",
            time=999.75,
            model="gpt-4o",
            status=200,
            latency_ms=250.0,
            input_tokens=10,
            output_tokens=20,
            client_ip="10.0.0.1",
            user_agent="openai-python/1.0",
        ),
        RequestRecord(
            key_id="k1", time=1001.999, model="no-such-model", status=404, latency_ms=1.0, client_ip="10.0.0.2"
        ),
        RequestRecord(key_id="k2", time=1001.9995, model=None, status=405, latency_ms=0.5),
    ]
    assert sum(d.requests for d in sink.batches[0]) == len(sink.records)
    assert (rec.pending_requests, rec.pending_records) == (0, 0)
    assert await rec.flush() and sink.calls == 1  # nothing new: no write


async def test_a_failed_flush_keeps_totals_and_records_together() -> None:
    sink = Sink(fail=2)
    rec = UsageRecorder(sink, interval=60)
    rec.record("k", 200, 1, 2, 1.0, "1.1.1.1", "m1")
    assert not await rec.flush()
    rec.record("k", 500, 0, 0, 1.0, "1.1.1.1", "m2")
    assert not await rec.flush()
    assert sink.batches == [] and sink.records == []
    assert await rec.flush()
    assert totals(sink) == {"k": (2, 1, 0, 1, 1, 2)}
    assert [r.model for r in sink.records] == ["m1", "m2"]  # the older first, nothing twice


async def test_pending_records_are_capped_while_the_store_is_down(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(fail=3)
    rec = UsageRecorder(sink, interval=60, max_pending_requests=4)
    for i in range(3):
        rec.record("k", 200, 1, 1, 1.0, None, f"m{i}")
    assert not await rec.flush()
    for i in range(3, 6):
        rec.record("k", 200, 1, 1, 1.0, None, f"m{i}")
    assert rec.pending_records == 4 and rec.pending_requests == 6  # totals are never dropped
    assert not await rec.flush()
    assert not await rec.flush()
    assert await rec.flush()
    assert totals(sink) == {"k": (6, 6, 0, 0, 6, 6)}
    assert [r.model for r in sink.records] == ["m0", "m1", "m2", "m3"]  # the oldest kept
    assert rec.dropped_records == 2
    assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == [
        (
            "request log: 2 records dropped (more than 4 waited for the store to be written); "
            "the key totals still count them"
        )
    ]


async def test_a_flush_writes_totals_and_log_in_one_store_transaction(tmp_path: Path) -> None:
    """Through the real store: a batch whose totals cannot be written leaves no log
    rows either; a recorder's flush writes both, and the log's view equals the totals."""
    from tests.conftest import open_core

    core = await open_core(tmp_path / "data", secret="usage-test-secret-0123456789abcdef")
    try:
        key = (await core.keys.create(name="logged")).row.id
        analytics = core.store
        orphan = RequestRecord(key_id=key, time=time.time(), model="gpt-4o", status=200, latency_ms=1.0)
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # the totals' insert fails after the log's
            await core.store.add_usage([UsageDelta(key_id="key_missing", requests=1)], [orphan])
        assert await analytics.count_requests() == 0

        rec = UsageRecorder(core.store.add_usage, interval=60)
        rec.record(key, 200, 5, 7, 3.0, "10.0.0.9", "gpt-4o", "curl/8")
        rec.record(key, 429, 0, 0, 0.2, "10.0.0.9", None, "curl/8")
        assert await rec.flush()
        usage = (await core.keys.get(key)).usage  # type: ignore[union-attr]
        assert usage.requests == await analytics.count_requests(key) == 2
        report = await analytics.usage(since=time.time() - 60, until=time.time() + 60, bucket="minute", key_id=key)
        t = report.totals
        assert (t.requests, t.successes, t.failures_4xx, t.input_tokens, t.output_tokens) == (
            usage.requests,
            usage.successes,
            usage.failures_4xx,
            usage.input_tokens,
            usage.output_tokens,
        )
        rows = await core.store.request_log()
        assert [(r.model, r.status, r.client_ip, r.user_agent) for r in rows] == [
            ("gpt-4o", 200, "10.0.0.9", "curl/8"),
            (None, 429, "10.0.0.9", "curl/8"),
        ]
    finally:
        await core.close()
