"""The built-in ``mock`` provider: answers in-process, offline, deterministically.

It lets a newcomer try every feature without an upstream account, and gives tests a
provider with no network. It speaks both dialects for every model it lists, in the
shapes the official SDKs parse:

* OpenAI ``chat/completions``, ``completions``, ``responses`` (JSON and SSE streams,
  usage in answers and, with ``stream_options.include_usage``, in the last chunk;
  the Responses stream carries it in ``response.completed``) and ``embeddings``
  (deterministic unit vectors, ``float`` or ``base64`` encoding, ``dimensions``);
* Anthropic ``messages`` (JSON and the event stream ``message_start`` →
  ``content_block_start`` → ``ping`` → ``content_block_delta``… →
  ``content_block_stop`` → ``message_delta`` (with usage) → ``message_stop``) and
  ``messages/count_tokens``.

The text echoes the start of the last user message; token counts are "one token per
four characters, at least one". ``max_tokens`` cuts the answer (finish reason
``length`` / stop reason ``max_tokens``). Streams are one SSE event per word.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import re
import struct
import time
from typing import Any

import msgspec

from agentrouter.gateway.errors import Dialect, Kinds, error_body
from agentrouter.gateway.routing import RouteKind

__all__ = ["EMBEDDING_MODELS", "MODELS", "MockResult", "handle"]

MODELS: tuple[str, ...] = (
    "mock-gpt",
    "mock-claude",
    "mock-embedding",
    # Names from the product document, so its examples run against the mock as written.
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-20241022",
    "text-embedding-3-small",
)
EMBEDDING_MODELS = {"mock-embedding": 256, "text-embedding-3-small": 1536}
DEFAULT_DIMENSIONS = 256

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_ids = itertools.count(1)


class MockResult:
    """What the app sends: a status, a content type, and the body as one piece
    (``stream=False``) or as SSE events to send one by one."""

    __slots__ = ("chunks", "content_type", "input_tokens", "output_tokens", "status", "stream")

    def __init__(
        self,
        status: int,
        content_type: bytes,
        chunks: list[bytes],
        stream: bool,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        self.status = status
        self.content_type = content_type
        self.chunks = chunks
        self.stream = stream
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def handle(kind: RouteKind, dialect: Dialect, model: str, body: bytes, request_id: str) -> MockResult:
    """Answer one request. The body is valid JSON with a string ``model`` (the app
    checked); anything else the endpoint needs is checked here, in the dialect."""
    req = _decode(body)
    try:
        if kind is RouteKind.CHAT:
            return _chat(req, model)
        if kind is RouteKind.COMPLETIONS:
            return _completions(req, model)
        if kind is RouteKind.RESPONSES:
            return _responses(req, model)
        if kind is RouteKind.EMBEDDINGS:
            return _embeddings(req, model)
        if kind is RouteKind.MESSAGES:
            return _messages(req, model)
        if kind is RouteKind.COUNT_TOKENS:
            return _count_tokens(req)
    except _Invalid as exc:
        return MockResult(400, _JSON, [error_body(dialect, Kinds.BAD_REQUEST, str(exc), request_id, exc.param)], False)
    raise AssertionError(kind)


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# --------------------------------------------------------------------------- text


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: Any, param: str = "messages") -> str:
    if not isinstance(messages, list) or not messages:
        raise _Invalid(f"'{param}' must be a non-empty array", param)
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return _text_of(messages[-1].get("content")) if isinstance(messages[-1], dict) else ""


def _all_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))


def _answer(prompt: str, model: str) -> str:
    preview = " ".join(prompt.split())[:80] or "(nothing)"
    return f"Hello! This is the AgentRouter mock provider answering as {model}. You said: {preview}"


_WORD = re.compile(r"\S+\s*")


def _pieces(text: str, max_tokens: Any) -> tuple[list[str], bool]:
    """The answer split into streamable pieces (a word and its trailing space each),
    cut to ``max_tokens``; True when it was cut."""
    words = _WORD.findall(text)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0:
        out: list[str] = []
        used = 0
        for w in words:
            cost = count_tokens(w)
            if used + cost > max_tokens:
                return out, True
            out.append(w)
            used += cost
    return words, False


def _sse(obj: Any, event: str | None = None) -> bytes:
    data = b"data: " + _encode(obj) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def _new_id(prefix: str) -> str:
    return f"{prefix}mock{next(_ids):020d}"


# --------------------------------------------------------------------------- OpenAI


def _chat(req: dict[str, Any], model: str) -> MockResult:
    prompt = _last_user_text(req.get("messages"))
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    pieces, cut = _pieces(_answer(prompt, model), max_tokens)
    text = "".join(pieces)
    inp, out = count_tokens(_all_text(req.get("messages"))), count_tokens(text) if text else 0
    usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
    finish = "length" if cut else "stop"
    cid, created = _new_id("chatcmpl-"), int(time.time())
    if not req.get("stream"):
        body = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "system_fingerprint": None,
        }
        return MockResult(200, _JSON, [_encode(body)], False, inp, out)
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        obj = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])
        if include_usage:
            obj["usage"] = None
        return _sse(obj)

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    chunks += [chunk({"content": p}, None) for p in pieces]
    chunks.append(chunk({}, finish))
    if include_usage:
        chunks.append(_sse(dict(base, choices=[], usage=usage)))
    chunks.append(b"data: [DONE]\n\n")
    return MockResult(200, _SSE, chunks, True, inp, out)


def _completions(req: dict[str, Any], model: str) -> MockResult:
    prompt = req.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    if not isinstance(prompt, str):
        raise _Invalid("'prompt' must be a string or an array of strings", "prompt")
    pieces, cut = _pieces(_answer(prompt, model), req.get("max_tokens", 16))
    text = "".join(pieces)
    inp, out = count_tokens(prompt), count_tokens(text) if text else 0
    usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
    finish = "length" if cut else "stop"
    cid, created = _new_id("cmpl-"), int(time.time())
    base = {"id": cid, "object": "text_completion", "created": created, "model": model, "system_fingerprint": None}
    if not req.get("stream"):
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return MockResult(200, _JSON, [_encode(dict(base, choices=[choice], usage=usage))], False, inp, out)
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    chunks = [
        _sse(dict(base, choices=[{"text": p, "index": 0, "logprobs": None, "finish_reason": None}])) for p in pieces
    ]
    chunks.append(_sse(dict(base, choices=[{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}])))
    if include_usage:
        chunks.append(_sse(dict(base, choices=[], usage=usage)))
    chunks.append(b"data: [DONE]\n\n")
    return MockResult(200, _SSE, chunks, True, inp, out)


def _responses_input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        users = [v for v in value if isinstance(v, dict) and v.get("role", "user") == "user"]
        item = users[-1] if users else value[-1]
        return _text_of(item.get("content")) if isinstance(item, dict) else ""
    raise _Invalid("'input' must be a string or a non-empty array", "input")


def _responses(req: dict[str, Any], model: str) -> MockResult:
    prompt = _responses_input_text(req.get("input"))
    pieces, cut = _pieces(_answer(prompt, model), req.get("max_output_tokens"))
    text = "".join(pieces)
    inp, out = count_tokens(prompt), count_tokens(text) if text else 0
    rid, mid, created = _new_id("resp_"), _new_id("msg_"), int(time.time())
    usage = {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inp + out,
    }
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item = {"id": mid, "type": "message", "status": "completed", "role": "assistant", "content": [part]}

    def response(status: str, output: list[Any], usage_: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut and status != "in_progress" else None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": req.get("previous_response_id"),
            "temperature": req.get("temperature", 1.0),
            "tool_choice": "auto",
            "tools": [],
            "top_p": req.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage_,
            "metadata": req.get("metadata") or {},
        }

    final_status = "incomplete" if cut else "completed"
    if not req.get("stream"):
        return MockResult(200, _JSON, [_encode(response(final_status, [item], usage))], False, inp, out)
    seq = itertools.count()

    def ev(name: str, **fields: Any) -> bytes:
        return _sse({"type": name, "sequence_number": next(seq), **fields}, name)

    open_item = dict(item, status="in_progress", content=[])
    empty_part = dict(part, text="")
    chunks = [
        ev("response.created", response=response("in_progress", [], None)),
        ev("response.in_progress", response=response("in_progress", [], None)),
        ev("response.output_item.added", output_index=0, item=open_item),
        ev("response.content_part.added", item_id=mid, output_index=0, content_index=0, part=empty_part),
    ]
    chunks += [
        ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=p, logprobs=[])
        for p in pieces
    ]
    chunks += [
        ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text, logprobs=[]),
        ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=part),
        ev("response.output_item.done", output_index=0, item=item),
        ev("response.incomplete" if cut else "response.completed", response=response(final_status, [item], usage)),
    ]
    return MockResult(200, _SSE, chunks, True, inp, out)


def _vector(text: str, dims: int) -> list[float]:
    raw = b"".join(
        hashlib.blake2b(text.encode(), digest_size=64, person=i.to_bytes(4, "little")).digest()
        for i in range(math.ceil(dims * 2 / 64))
    )
    values = [(v / 32767.5) - 1.0 for v in struct.unpack(f"<{dims}H", raw[: dims * 2])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _embeddings(req: dict[str, Any], model: str) -> MockResult:
    value = req.get("input")
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        inputs = value
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        inputs = [" ".join(map(str, value))]  # one input given as token ids
    elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        inputs = [" ".join(map(str, v)) for v in value]
    else:
        raise _Invalid("'input' must be a string or an array of strings or token arrays", "input")
    dims = req.get("dimensions", EMBEDDING_MODELS.get(model, DEFAULT_DIMENSIONS))
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
        raise _Invalid("'dimensions' must be an integer between 1 and 4096", "dimensions")
    fmt = req.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise _Invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    data = []
    for i, text in enumerate(inputs):
        vec = _vector(text, dims)
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if fmt == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(count_tokens(t) for t in inputs)
    body = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return MockResult(200, _JSON, [_encode(body)], False, tokens, 0)


# --------------------------------------------------------------------------- Anthropic


def _anthropic_input_tokens(req: dict[str, Any]) -> int:
    system = req.get("system")
    return count_tokens(_all_text(req.get("messages")) + " " + _text_of(system))


def _messages(req: dict[str, Any], model: str) -> MockResult:
    max_tokens = req.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _Invalid("max_tokens: Field required (a positive integer)")
    prompt = _last_user_text(req.get("messages"))
    pieces, cut = _pieces(_answer(prompt, model), max_tokens)
    text = "".join(pieces)
    inp, out = _anthropic_input_tokens(req), count_tokens(text) if text else 0
    stop = "max_tokens" if cut else "end_turn"
    mid = _new_id("msg_")
    usage = {"input_tokens": inp, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": out}
    message = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not req.get("stream"):
        return MockResult(200, _JSON, [_encode(message)], False, inp, out)
    start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    chunks = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    chunks += [
        _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
            "content_block_delta",
        )
        for p in pieces
    ]
    chunks += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": out},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return MockResult(200, _SSE, chunks, True, inp, out)


def _count_tokens(req: dict[str, Any]) -> MockResult:
    if not isinstance(req.get("messages"), list):
        raise _Invalid("messages: Field required")
    return MockResult(200, _JSON, [_encode({"input_tokens": _anthropic_input_tokens(req)})], False)
