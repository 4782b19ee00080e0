"""Usage per key and the request log: gathered in memory on the hot path, written in
batches off it.

``UsageRecorder.record`` adds one request to the key's running totals (a dict lookup
and a few integer additions) and appends one small ``RequestRecord`` for the request
log (time, key id, model, status, latency, tokens, client IP, user agent, the
caller's own x-request-id; never the key). One tracked task hands everything gathered so far to its sink about once a
second — the worker's usage writer process (``store.writer.UsageWriter``), or
``Store.add_usage`` itself with ``usage_writer = "inline"``; either way totals and
log rows are written in one transaction, so the two never disagree — and ``close``
writes the rest, so a graceful shutdown loses nothing.

Each batch has an id (this recorder's random prefix and a sequence number) that the
store commits with it, skipping a batch whose id it has committed before. A batch
whose write failed is kept as it is, id and all, and sent again before anything
newer: when the failure was a lost answer after the commit (the writer process
killed at that moment, the database connection cut), the retry is skipped by the
store, so no batch ever counts twice. Meanwhile new requests gather into the next
batch.

Memory stays bounded when the store is down for long (PostgreSQL restarting, say):
the totals are a few numbers per key and are never dropped, but at most
``max_pending_requests`` log records (``usage_buffer_records``) wait, the held batch's
included; the records past that are dropped (and counted, and logged at the next
flush), so after a long outage the log has fewer rows than the totals count. Within
the bound nothing is lost: everything is written when the store is back.

Requests refused before their key is known (401: no key, a malformed, unknown,
deleted or expired one) belong to no key: they are in neither the totals nor the log.

Tokens are read cheaply:

* JSON answers: one msgspec pass over the whole answer, which checks that it is a
  JSON object in UTF-8 (a 2xx that is not is refused by the app: ``NotJSONObject``)
  and keeps only the raw bytes of its top-level ``usage`` object, then decoded
  alone; nothing else of the answer is built;
* streams: only the events that carry usage. ``StreamUsage`` keeps the first and the
  last few kilobytes of the stream and decodes, at the end, the usage objects in
  them: OpenAI's final chunk (``stream_options.include_usage``), the Responses API's
  ``response.completed``, and Anthropic's ``message_start`` (input tokens) and
  ``message_delta`` (cumulative output tokens).

Input tokens of Anthropic answers include the cache writes and reads
(``cache_creation_input_tokens``, ``cache_read_input_tokens``): all were processed.

A usage number counts only if it is an integer from 0 to ``MAX_TOKENS`` (10^9, far
above any model's context): a negative, fractional, boolean, textual or absurd value
counts 0 and the result says so (``Tokens.ignored``), so a broken or hostile
upstream can never drive a key's totals negative or overflow them. The app logs
that once per provider and worker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from agentrouter.errors import AgentRouterError
from agentrouter.store.models import RequestRecord, UsageDelta

__all__ = [
    "MAX_TOKENS",
    "NotJSONObject",
    "StreamUsage",
    "Tokens",
    "UsageRecorder",
    "tokens_from_json",
    "tokens_from_sse",
]

log = logging.getLogger("agentrouter.usage")


# --------------------------------------------------------------------------- parsing


MAX_TOKENS = 10**9
"""The largest token count believed for one number of one request."""


class NotJSONObject(AgentRouterError):
    """An answer that should be a JSON object (a 2xx of the JSON routes) is not one."""


class Tokens(NamedTuple):
    input: int
    output: int
    ignored: bool = False
    """A usage number was not a count (see the module docstring) and counted 0."""


_NO_TOKENS = Tokens(0, 0)


class _Usage(msgspec.Struct):
    # Any: every value is checked by _split, so that one bad number costs that number,
    # not the whole object (and a typed decode would refuse the answer).
    prompt_tokens: Any = None
    completion_tokens: Any = None
    input_tokens: Any = None
    output_tokens: Any = None
    cache_creation_input_tokens: Any = None
    cache_read_input_tokens: Any = None


class _Answer(msgspec.Struct):
    usage: msgspec.Raw = msgspec.Raw(b"null")


_decode_answer = msgspec.json.Decoder(_Answer).decode
_decode_usage = msgspec.json.Decoder(_Usage | None).decode

# A usage object in a stream: a JSON object nested at most three deep ("*_details",
# "cache_creation", "server_tool_use"), with no braces inside its strings. Found after
# its key, never by parsing the rest of the stream. Inside JSON strings quotes are
# escaped, so the literal '"usage"' followed by ':' only occurs as a key.
_USAGE = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})')


def _split(u: _Usage) -> tuple[int | None, int | None, bool]:
    """(input, output, ignored) in either dialect's names; None where the object has
    no number of that kind; a value that is not a count is 0 and sets ``ignored``."""
    ignored = False
    inp: int | None = None
    parts = (u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens)
    if parts == (None, None, None):
        parts = (u.prompt_tokens, None, None)
    for v in parts:
        if v is None:
            continue
        if type(v) is int and 0 <= v <= MAX_TOKENS:
            inp = (inp or 0) + v
        else:
            ignored = True
            inp = inp or 0
    out: int | None = None
    v = u.output_tokens if u.output_tokens is not None else u.completion_tokens
    if v is not None:
        if type(v) is int and 0 <= v <= MAX_TOKENS:
            out = v
        else:
            ignored = True
            out = 0
    return inp, out, ignored


def tokens_from_json(body: bytes) -> Tokens:
    """The tokens of a JSON answer of either dialect ((0, 0) if it has no usage).

    Raises ``NotJSONObject`` when ``body`` is not a JSON object in UTF-8: the one
    msgspec pass that finds ``usage`` checks the syntax of the whole document.
    """
    try:
        answer = _decode_answer(body)
    except msgspec.ValidationError:
        raise NotJSONObject("a JSON value that is not an object") from None
    except msgspec.DecodeError as exc:
        raise NotJSONObject(str(exc)) from None
    if not body.isascii():
        try:
            body.decode()  # msgspec does not check the strings it skips
        except UnicodeDecodeError as exc:
            raise NotJSONObject(f"not UTF-8 at byte {exc.start}") from None
    try:
        usage = _decode_usage(answer.usage)
    except msgspec.ValidationError:
        return Tokens(0, 0, True)  # "usage" is there, but not an object
    if usage is None:
        return _NO_TOKENS
    inp, out, ignored = _split(usage)
    return Tokens(inp or 0, out or 0, ignored)


def tokens_from_sse(*parts: bytes) -> Tokens:
    """The tokens in pieces of an SSE stream, in stream order.

    Every usage object found counts, the last number of each kind winning:
    Anthropic's ``message_delta`` (cumulative output tokens) after its ``message_start``
    (input tokens); OpenAI's final chunk; the Responses API's ``response.completed``.
    """
    inp = out = None
    ignored = False
    for part in parts:
        for m in _USAGE.finditer(part):
            try:
                usage = _decode_usage(m.group(1))
            except msgspec.DecodeError:
                continue
            if usage is None:
                continue
            i, o, bad = _split(usage)
            ignored = ignored or bad
            if i is not None:
                inp = i
            if o is not None:
                out = o
    return Tokens(inp or 0, out or 0, ignored)


class StreamUsage:
    """Keeps the first ``HEAD`` and last ``TAIL`` bytes of a stream, for ``tokens()``."""

    __slots__ = ("head", "tail")

    HEAD = 8192
    TAIL = 16384

    def __init__(self) -> None:
        self.head = b""
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < self.HEAD:
            self.head += chunk
            return
        tail = self.tail + chunk
        self.tail = tail[-self.TAIL :] if len(tail) > self.TAIL else tail

    def tokens(self) -> Tokens:
        return tokens_from_sse(self.head, self.tail)


# --------------------------------------------------------------------------- aggregation


class _Totals:
    __slots__ = (
        "failures_4xx",
        "failures_5xx",
        "input_tokens",
        "last_client_ip",
        "last_used_at",
        "latency_ms",
        "output_tokens",
        "requests",
        "successes",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.successes = 0
        self.failures_4xx = 0
        self.failures_5xx = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.latency_ms = 0.0
        self.last_used_at = 0.0
        self.last_client_ip: str | None = None

    def delta(self, key_id: str) -> UsageDelta:
        return UsageDelta(
            key_id=key_id,
            requests=self.requests,
            successes=self.successes,
            failures_4xx=self.failures_4xx,
            failures_5xx=self.failures_5xx,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            latency_ms_total=self.latency_ms,
            last_used_at=self.last_used_at,
            last_client_ip=self.last_client_ip,
        )

    def merge(self, d: UsageDelta) -> None:
        self.requests += d.requests
        self.successes += d.successes
        self.failures_4xx += d.failures_4xx
        self.failures_5xx += d.failures_5xx
        self.input_tokens += d.input_tokens
        self.output_tokens += d.output_tokens
        self.latency_ms += d.latency_ms_total
        if d.last_used_at >= self.last_used_at:
            self.last_used_at = d.last_used_at
            self.last_client_ip = d.last_client_ip or self.last_client_ip


class Sink(Protocol):
    """``UsageWriter`` or ``Store.add_usage``: writes the totals and the log records in
    one transaction (once per ``batch_id``), or raises and writes nothing — or, when the
    raise was a lost answer, wrote it, which the batch id makes harmless."""

    def __call__(
        self, deltas: Sequence[UsageDelta], requests: Sequence[RequestRecord], *, batch_id: str
    ) -> Awaitable[object]: ...


class _Batch(NamedTuple):
    id: str
    deltas: list[UsageDelta]
    records: list[RequestRecord]


MAX_PENDING_REQUESTS = 100_000
"""Request-log records kept while the store cannot be written (about 300 bytes each)."""


class UsageRecorder:
    """Per-key totals and request-log records since the last flush, and the one task
    that flushes them."""

    def __init__(
        self,
        sink: Sink,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        *,
        max_pending_requests: int = MAX_PENDING_REQUESTS,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._clock = clock
        self._max_requests = max_pending_requests
        self._pending: dict[str, _Totals] = {}
        self._requests: list[RequestRecord] = []
        self._held: _Batch | None = None  # a batch whose write failed, sent again as it is
        self._held_records = 0
        self._batch_prefix = secrets.token_hex(8)
        self._batch_seq = 0
        self._failing = False  # the last write failed (logged once per outage)
        self._dropped = 0  # log records dropped since the last report
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self.flushed_requests = 0
        """Requests written so far by this process (for tests and logs)."""
        self.dropped_records = 0
        """Request-log records this process dropped because too many were waiting."""
        self.written_batches = 0
        """Batches the sink wrote (for ``/metrics``)."""
        self.failed_batches = 0
        """Batches the sink failed to write, each kept for the next flush (for ``/metrics``)."""

    def record(
        self,
        key_id: str,
        status: int,
        input_tokens: int,
        output_tokens: int,
        latency_ms: float,
        client_ip: str | None,
        model: str | None = None,
        user_agent: str | None = None,
        caller_request_id: str | None = None,
    ) -> None:
        """Count one answered request of ``key_id`` (``model``: None when the request
        was refused before its body was read; ``caller_request_id``: the caller's own
        ``x-request-id``, if any)."""
        now = self._clock()
        if len(self._requests) + self._held_records < self._max_requests:
            self._requests.append(
                RequestRecord(
                    key_id=key_id,
                    time=now - latency_ms / 1000.0,
                    model=model,
                    status=status,
                    latency_ms=latency_ms,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    client_ip=client_ip,
                    user_agent=user_agent,
                    caller_request_id=caller_request_id,
                )
            )
        else:
            self._dropped += 1
        t = self._pending.get(key_id)
        if t is None:
            t = self._pending[key_id] = _Totals()
        t.requests += 1
        if status < 400:
            t.successes += 1
        elif status < 500:
            t.failures_4xx += 1
        else:
            t.failures_5xx += 1
        t.input_tokens += input_tokens
        t.output_tokens += output_tokens
        t.latency_ms += latency_ms
        t.last_used_at = now
        if client_ip is not None:
            t.last_client_ip = client_ip

    @property
    def pending_requests(self) -> int:
        """Requests counted in the totals and not written yet."""
        held = sum(d.requests for d in self._held.deltas) if self._held is not None else 0
        return held + sum(t.requests for t in self._pending.values())

    @property
    def pending_records(self) -> int:
        """Request-log records not written yet."""
        return len(self._requests) + self._held_records

    def start(self) -> None:
        """Start the periodic flush (on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="agentrouter-usage-flush")

    async def _run(self) -> None:
        # Never cancelled in the middle of a write: a cancelled await would not stop
        # the store's thread from committing, and the retry would count twice.
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self._interval)
            except TimeoutError:
                pass
            await self.flush()

    async def flush(self) -> bool:
        """Write the held batch (if a write failed before), then what was gathered
        since; on failure keep the batch for the next try. True on success."""
        async with self._lock:
            self._report_dropped()
            if self._held is not None:
                if not await self._write(self._held):
                    return False
                self._held, self._held_records = None, 0
            if not self._pending and not self._requests:
                return True
            pending, self._pending = self._pending, {}
            records, self._requests = self._requests, []
            self._batch_seq += 1
            batch = _Batch(f"{self._batch_prefix}-{self._batch_seq}", [t.delta(k) for k, t in pending.items()], records)
            if not await self._write(batch):
                self._held, self._held_records = batch, len(records)
                return False
            return True

    async def _write(self, batch: _Batch) -> bool:
        try:
            await self._sink(batch.deltas, batch.records, batch_id=batch.id)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the batch, try again
            if not self._failing:
                self._failing = True
                log.error(
                    "writing usage for %d keys (%d requests) failed (%s); keeping it and trying again "
                    "every %g s (at most %d request-log records wait)",
                    len(batch.deltas),
                    len(batch.records),
                    " ".join(f"{type(exc).__name__}: {exc}".split())[:500],
                    self._interval,
                    self._max_requests,
                )
            else:
                log.debug("writing usage failed again: %s", exc)
            self.failed_batches += 1
            return False
        if self._failing:
            self._failing = False
            log.warning("usage is written again (batch %s)", batch.id)
        self.written_batches += 1
        self.flushed_requests += sum(d.requests for d in batch.deltas)
        return True

    def _report_dropped(self) -> None:
        if self._dropped:
            self.dropped_records += self._dropped
            log.error(
                "request log: %d records dropped (more than %d waited for the store to be written); "
                "the key totals still count them",
                self._dropped,
                self._max_requests,
            )
            self._dropped = 0

    async def close(self, attempts: int = 3) -> None:
        """Stop the periodic task and write everything that is left."""
        task, self._task = self._task, None
        self._stop.set()
        if task is not None:
            await task
        for attempt in range(attempts):
            if await self.flush():
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        self._report_dropped()
        lost = self.pending_requests
        if lost or self.pending_records:
            log.error(
                "usage of %d requests (%d request-log records) could not be written at shutdown",
                lost,
                self.pending_records,
            )
