"""The CPU cost of the upstream client's strictness, on the hot path of every
proxied request, each beside the code it replaced, measured in the same run:

    .venv/bin/python -m pytest benches/bench_upstream.py --benchmark-enable

* parsing a typical OpenAI response head (26 fields, ~1 KiB) and its JSON body with
  ``gateway.http1.ResponseParser`` versus the previous lenient loop (kept below as
  the reference: ``int()`` on Content-Length, a substring test for ``chunked``, no
  field checks);
* reading the usage of a chat completion with ``tokens_from_json`` (one msgspec
  pass that also checks the whole answer is a JSON object) versus the previous
  backwards search and regex;
* the ``poll`` of a reused connection's socket before each write (the resend rule).
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from agentrouter.gateway.http1 import ResponseParser
from agentrouter.gateway.usage import tokens_from_json

BODY = msgspec.json.encode(
    {
        "id": "chatcmpl-AbCdEf0123456789",
        "object": "chat.completion",
        "created": 1764499200,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how can I help you today? " * 5},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
    }
)
HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Mon, 30 Nov 2026 09:12:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: keep-alive\r\n"
    b"access-control-expose-headers: X-Request-ID\r\n"
    b"openai-organization: user-abcdefghijklmnopqrstuvwx\r\n"
    b"openai-processing-ms: 412\r\n"
    b"openai-project: proj_abcdefghijklmnopqrstuvwx\r\n"
    b"openai-version: 2020-10-01\r\n"
    b"x-envoy-upstream-service-time: 415\r\n"
    b"x-ratelimit-limit-requests: 10000\r\n"
    b"x-ratelimit-limit-tokens: 30000000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\n"
    b"x-ratelimit-remaining-tokens: 29999990\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\n"
    b"x-ratelimit-reset-tokens: 0s\r\n"
    b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
    b"cf-cache-status: DYNAMIC\r\n"
    b"set-cookie: __cf_bm=0123456789abcdefghijklmnopqrstuvwxyz0123456789; path=/; expires=Mon, 30-Nov-26 "
    b"09:42:00 GMT; domain=.api.openai.com; HttpOnly; Secure; SameSite=None\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Server: cloudflare\r\n"
    b"CF-RAY: 8e9b0c1d2e3f4a5b-AMS\r\n"
    b'alt-svc: h3=":443"; ma=86400\r\n'
    b"\r\n"
) % len(BODY)
ANSWER = HEAD + BODY


class Parser(ResponseParser):
    """The connection's hooks, minus the event loop: keep what arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    def _on_head(self, status: int, headers: list[tuple[bytes, bytes]], framing: str) -> None:
        self.status, self.headers = status, headers

    def _on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def _on_end(self) -> None:
        pass

    def _on_invalid(self, message: str) -> None:
        raise AssertionError(message)


def strict(parser: Parser, answer: bytes) -> int:
    parser.chunks = []
    parser.expect_response()
    parser.feed(answer)
    assert parser.done
    return parser.status


def previous(answer: bytes) -> int:
    """The head parsing the strict parser replaced (upstream.py before), for scale."""
    buf = bytearray(answer)
    end = buf.find(b"\r\n\r\n")
    lines = bytes(buf[:end]).split(b"\r\n")
    del buf[: end + 4]
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1."):
        raise ValueError
    status = int(status_line[9:12])
    headers = []
    length = -1
    chunked = False
    keep_alive = status_line[7:8] == b"1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
    body = bytes(buf[:length])
    # the relay lower-cased every name again (_relay_headers, before)
    relayed = [(n.lower(), v) for n, v in headers]
    assert body and relayed and not chunked and keep_alive
    return status


_USAGE_AT = re.compile(rb'"usage"\s*:\s*(?:(\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})|null)')


class _OldUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


_old_decode = msgspec.json.Decoder(_OldUsage).decode


def previous_tokens(body: bytes) -> tuple[int, int]:
    """tokens_from_json before: search backwards for "usage", regex, decode the object."""
    at = body.rfind(b'"usage"')
    m = _USAGE_AT.match(body, at)
    assert m is not None and m.group(1) is not None
    u = _old_decode(m.group(1))
    return u.prompt_tokens or 0, u.completion_tokens or 0


@pytest.mark.benchmark(group="response head + body")
def test_parse_strict(benchmark: Any) -> None:
    parser = Parser()
    assert benchmark(strict, parser, ANSWER) == 200
    assert len(parser.headers) == HEAD.count(b"\r\n") - 2 and b"".join(parser.chunks) == BODY


@pytest.mark.benchmark(group="response head + body")
def test_parse_previous_reference(benchmark: Any) -> None:
    assert benchmark(previous, ANSWER) == 200


@pytest.mark.benchmark(group="usage of a JSON answer")
def test_tokens_from_json_validating(benchmark: Any) -> None:
    assert benchmark(tokens_from_json, BODY)[:2] == (11, 7)


@pytest.mark.benchmark(group="usage of a JSON answer")
def test_tokens_previous_reference(benchmark: Any) -> None:
    assert benchmark(previous_tokens, BODY) == (11, 7)


@pytest.fixture
def idle_socket() -> Iterator[select.poll]:
    a, b = socket.socketpair()
    poll = select.poll()
    poll.register(a.fileno(), select.POLLIN)
    yield poll
    a.close()
    b.close()


@pytest.mark.benchmark(group="resend rule")
def test_poll_before_reusing_a_connection(benchmark: Any, idle_socket: select.poll) -> None:
    assert benchmark(idle_socket.poll, 0) == []
