"""Error bodies in the caller's dialect.

OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}``; the Anthropic
routes (``/v1/messages*``) answer ``{"type": "error", "error": {"type", "message"},
"request_id"}``. The status codes are the ones the official SDKs map to their
exceptions: 400 ``BadRequestError``, 401 ``AuthenticationError``, 403
``PermissionDeniedError``, 404 ``NotFoundError``, 429 ``RateLimitError``, >= 500
``InternalServerError`` (408 is ``APIStatusError``; both SDKs retry it).

Each ``ErrorKind`` precomputes the constant parts of both bodies, so building an
error costs one string encode and two concatenations.

A stream that already started cannot change its status: it ends with ``error_event``
instead, the dialect's own error event (OpenAI: ``data: {"error": {...}}``, which the
openai SDK raises as ``APIError``; Anthropic: ``event: error`` with ``{"type":
"error", "error": {...}}``, which the anthropic SDK raises as ``APIStatusError``).
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Dialect", "ErrorKind", "Kinds", "error_body", "error_event"]

_encode = msgspec.json.Encoder().encode


class Dialect(enum.IntEnum):
    OPENAI = 0
    ANTHROPIC = 1


class ErrorKind:
    """One kind of refusal: its status and its name in each dialect."""

    __slots__ = ("_an_head", "_oa_code", "_oa_tail", "anthropic_type", "name", "openai_code", "openai_type", "status")

    def __init__(self, name: str, status: int, openai_type: str, openai_code: str | None, anthropic_type: str):
        self.name = name
        self.status = status
        self.openai_type = openai_type
        self.openai_code = openai_code
        self.anthropic_type = anthropic_type
        # OpenAI: '{"error":{"message":' MESSAGE _oa_tail PARAM ',"code":' _oa_code '}}'
        self._oa_tail = b',"type":' + _encode(openai_type) + b',"param":'
        self._oa_code = _encode(openai_code)
        # Anthropic: _an_head MESSAGE '},"request_id":' REQUEST_ID '}'
        self._an_head = b'{"type":"error","error":{"type":' + _encode(anthropic_type) + b',"message":'

    def __repr__(self) -> str:
        return f"ErrorKind({self.name}, {self.status})"


class Kinds:
    """The refusals the gateway itself produces (upstream errors are relayed as-is)."""

    MISSING_KEY = ErrorKind("missing_key", 401, "invalid_request_error", "invalid_api_key", "authentication_error")
    INVALID_KEY = ErrorKind("invalid_key", 401, "invalid_request_error", "invalid_api_key", "authentication_error")
    # A valid key whose scope is not "inference" (a management key) on an inference route:
    # authenticated but not allowed, so 403 (SDKs: PermissionDeniedError).
    WRONG_SCOPE = ErrorKind("wrong_scope", 403, "permission_error", "insufficient_scope", "permission_error")
    RATE_LIMITED = ErrorKind("rate_limited", 429, "requests", "rate_limit_exceeded", "rate_limit_error")
    BAD_REQUEST = ErrorKind("bad_request", 400, "invalid_request_error", None, "invalid_request_error")
    INVALID_JSON = ErrorKind("invalid_json", 400, "invalid_request_error", "invalid_json", "invalid_request_error")
    DIALECT_MISMATCH = ErrorKind(
        "dialect_mismatch", 400, "invalid_request_error", "unsupported_model_for_route", "invalid_request_error"
    )
    MODEL_NOT_FOUND = ErrorKind("model_not_found", 404, "invalid_request_error", "model_not_found", "not_found_error")
    ROUTE_NOT_FOUND = ErrorKind("route_not_found", 404, "invalid_request_error", "unknown_url", "not_found_error")
    METHOD_NOT_ALLOWED = ErrorKind(
        "method_not_allowed", 405, "invalid_request_error", "method_not_allowed", "invalid_request_error"
    )
    TOO_LARGE = ErrorKind("too_large", 413, "invalid_request_error", "request_too_large", "request_too_large")
    # The caller's body stalled (body_idle_timeout) or took too long (body_timeout).
    REQUEST_TIMEOUT = ErrorKind(
        "request_timeout", 408, "invalid_request_error", "request_timeout", "invalid_request_error"
    )
    UPSTREAM_UNAVAILABLE = ErrorKind("upstream_unavailable", 502, "server_error", "upstream_unavailable", "api_error")
    # The upstream answered, but with something no SDK can use: an answer that breaks
    # HTTP/1.1 (gateway.http1), a 101, a 2xx whose body is not a JSON object.
    UPSTREAM_INVALID = ErrorKind("upstream_invalid", 502, "server_error", "upstream_invalid_response", "api_error")
    # A 3xx: never relayed (the SDKs would re-post the prompt, with the caller's key,
    # to wherever it points) nor followed.
    UPSTREAM_REDIRECT = ErrorKind("upstream_redirect", 502, "server_error", "upstream_redirect", "api_error")
    UPSTREAM_TIMEOUT = ErrorKind("upstream_timeout", 504, "server_error", "upstream_timeout", "timeout_error")
    INTERNAL = ErrorKind("internal", 500, "server_error", "internal_error", "api_error")
    # The gateway's own state failed (the store during a key-table reload, the limiter region).
    UNAVAILABLE = ErrorKind("unavailable", 503, "server_error", "service_unavailable", "api_error")
    SHUTTING_DOWN = ErrorKind("shutting_down", 503, "server_error", "shutting_down", "overloaded_error")


def error_body(dialect: Dialect, kind: ErrorKind, message: str, request_id: str, param: str | None = None) -> bytes:
    """The JSON body for ``kind`` in ``dialect``."""
    if dialect is Dialect.ANTHROPIC:
        return kind._an_head + _encode(message) + b'},"request_id":' + _encode(request_id) + b"}"
    return (
        b'{"error":{"message":'
        + _encode(message)
        + kind._oa_tail
        + _encode(param)
        + b',"code":'
        + kind._oa_code
        + b"}}"
    )


def error_event(dialect: Dialect, kind: ErrorKind, message: str, request_id: str) -> bytes:
    """The SSE event that ends a stream with ``kind`` in ``dialect``."""
    body = error_body(dialect, kind, message, request_id)
    if dialect is Dialect.ANTHROPIC:
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"
