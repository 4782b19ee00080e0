"""Usage per key and the request log: gathered in memory on the hot path, written in
batches off it.

``UsageRecorder.record`` adds one request to the key's running totals (a dict lookup
and a few integer additions) and appends one small ``RequestRecord`` for the request
log (time, key id, model, status, latency, tokens, client IP, user agent; never the
key). One tracked task hands everything gathered so far to its sink about once a
second — the worker's usage writer process (``store.writer.UsageWriter``), or
``Store.add_usage`` itself with ``usage_writer = "inline"``; either way totals and
log rows are written in one transaction, so the two never disagree — and ``close``
writes the rest, so a graceful shutdown loses nothing. A failed write keeps both
and tries again on the next tick.

Memory stays bounded when the store is down for long: the totals are a few numbers
per key and are never dropped, but at most ``max_pending_requests`` log records wait;
the records past that are dropped (and counted, and logged at the next flush), so
after a long outage the log has fewer rows than the totals count.

Requests refused before their key is known (401: no key, a malformed, unknown,
deleted or expired one) belong to no key: they are in neither the totals nor the log.

Tokens are read cheaply:

* JSON answers: only the ``usage`` object, found by searching backwards for its key
  and decoded with msgspec; the rest of the answer is never parsed;
* streams: only the events that carry usage. ``StreamUsage`` keeps the first and the
  last few kilobytes of the stream and decodes, at the end, the usage objects in
  them: OpenAI's final chunk (``stream_options.include_usage``), the Responses API's
  ``response.completed``, and Anthropic's ``message_start`` (input tokens) and
  ``message_delta`` (cumulative output tokens).

Input tokens of Anthropic answers include the cache writes and reads
(``cache_creation_input_tokens``, ``cache_read_input_tokens``): all were processed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from agentrouter.store.models import RequestRecord, UsageDelta

__all__ = ["StreamUsage", "UsageRecorder", "tokens_from_json", "tokens_from_sse"]

log = logging.getLogger("agentrouter.usage")


# --------------------------------------------------------------------------- parsing


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


_decode_usage = msgspec.json.Decoder(_Usage).decode

# A usage object: a JSON object nested at most three deep ("*_details", "cache_creation",
# "server_tool_use"), with no braces inside its strings. Found after its key, never by
# parsing the rest of the document. Inside JSON strings quotes are escaped, so the
# literal '"usage"' followed by ':' only occurs as a key.
_USAGE = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})')
_USAGE_AT = re.compile(rb'"usage"\s*:\s*(?:(\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})|null)')


def _split(u: _Usage) -> tuple[int | None, int | None]:
    """(input, output) in either dialect's names; None where the object has no number."""
    if u.input_tokens is not None or u.cache_creation_input_tokens is not None or u.cache_read_input_tokens is not None:
        inp: int | None = (
            (u.input_tokens or 0) + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
        )
    else:
        inp = u.prompt_tokens
    out = u.output_tokens if u.output_tokens is not None else u.completion_tokens
    return inp, out


def tokens_from_json(body: bytes) -> tuple[int, int]:
    """(input, output) tokens of a JSON answer of either dialect; (0, 0) if it has none.

    Searches backwards for the last ``"usage"`` key (it comes last or nearly so in
    both dialects' answers) and decodes only its object.
    """
    end = len(body)
    while True:
        at = body.rfind(b'"usage"', 0, end)
        if at < 0:
            return 0, 0
        m = _USAGE_AT.match(body, at)
        if m is not None:
            if m.group(1) is None:
                return 0, 0  # "usage": null
            try:
                inp, out = _split(_decode_usage(m.group(1)))
            except msgspec.DecodeError:
                return 0, 0
            return inp or 0, out or 0
        end = at  # the string "usage" as a value; look further back


def tokens_from_sse(*parts: bytes) -> tuple[int, int]:
    """(input, output) tokens from pieces of an SSE stream, in stream order.

    Every usage object found counts, the last number of each kind winning:
    Anthropic's ``message_delta`` (cumulative output tokens) after its ``message_start``
    (input tokens); OpenAI's final chunk; the Responses API's ``response.completed``.
    """
    inp = out = None
    for part in parts:
        for m in _USAGE.finditer(part):
            try:
                i, o = _split(_decode_usage(m.group(1)))
            except msgspec.DecodeError:
                continue
            if i is not None:
                inp = i
            if o is not None:
                out = o
    return inp or 0, out or 0


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

    def tokens(self) -> tuple[int, int]:
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


Sink = Callable[[Sequence[UsageDelta], Sequence[RequestRecord]], Awaitable[None]]
"""``UsageWriter`` or ``Store.add_usage``: writes the totals and the log records in
one transaction, or raises and writes nothing."""

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
        self._dropped = 0  # log records dropped since the last report
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self.flushed_requests = 0
        """Requests written so far by this process (for tests and logs)."""
        self.dropped_records = 0
        """Request-log records this process dropped because too many were waiting."""

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
    ) -> None:
        """Count one answered request of ``key_id`` (``model``: None when the request
        was refused before its body was read)."""
        now = self._clock()
        if len(self._requests) < self._max_requests:
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
        return sum(t.requests for t in self._pending.values())

    @property
    def pending_records(self) -> int:
        """Request-log records not written yet."""
        return len(self._requests)

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
        """Write what was gathered; on failure keep it for the next try. True on success."""
        async with self._lock:
            self._report_dropped()
            if not self._pending and not self._requests:
                return True
            batch, self._pending = self._pending, {}
            records, self._requests = self._requests, []
            deltas = [t.delta(k) for k, t in batch.items()]
            try:
                await self._sink(deltas, records)
            except Exception:
                log.exception(
                    "writing usage for %d keys (%d requests) failed; keeping it for the next flush",
                    len(deltas),
                    len(records),
                )
                self._restore(deltas, records)
                return False
            self.flushed_requests += sum(d.requests for d in deltas)
            return True

    def _restore(self, deltas: list[UsageDelta], records: list[RequestRecord]) -> None:
        for d in deltas:
            t = self._pending.get(d.key_id)
            if t is None:
                t = self._pending[d.key_id] = _Totals()
            t.merge(d)
        # The older records first; past the cap, the newest are the ones dropped.
        records.extend(self._requests)
        if len(records) > self._max_requests:
            self._dropped += len(records) - self._max_requests
            del records[self._max_requests :]
        self._requests = records

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
        if lost or self._requests:
            log.error(
                "usage of %d requests (%d request-log records) could not be written at shutdown",
                lost,
                len(self._requests),
            )
