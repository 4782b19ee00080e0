"""CORS for browser callers, one policy for ``/v1`` and ``/api``.

Off unless ``cors_allow_origins`` lists origins (``Settings``). Then:

* an answer to a request whose ``Origin`` is allowed carries
  ``Access-Control-Allow-Origin`` (the origin itself, or ``*`` when ``*`` is listed),
  ``Vary: Origin`` and ``Access-Control-Expose-Headers`` naming the headers a browser
  client must be able to read: the rate-limit headers, ``Retry-After``,
  ``retry-after-ms`` (the OpenAI SDK's retry reads it first), ``x-request-id`` and
  ``request-id`` (the Anthropic SDK's);
* a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed
  origin is answered 204, without a key, allowing the route's methods and the request
  headers the SDKs send (``authorization``, ``x-api-key``, ``content-type``, ``accept``,
  ``idempotency-key``, and every ``openai-*``, ``anthropic-*`` and ``x-stainless-*``
  header), for ``PREFLIGHT_MAX_AGE`` seconds;
* an exactly listed origin is also told ``Access-Control-Allow-Credentials: true``
  (cookies, for a console on another origin); ``*`` never is — browsers refuse
  credentials with a wildcard, and a wildcard with credentials would let any site act
  as its visitor.

Requests from other origins get no CORS headers: the browser then blocks the answer.
Non-browser clients send no ``Origin`` and see no difference.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from agentrouter.asgi import Send

__all__ = ["EXPOSED_HEADERS", "PREFLIGHT_MAX_AGE", "CorsPolicy", "cors_policy"]

EXPOSED_HEADERS = b", ".join(
    [
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"retry-after",
        b"retry-after-ms",
        b"x-request-id",
        b"request-id",
    ]
)
PREFLIGHT_MAX_AGE = b"600"
"""Seconds a browser may reuse a preflight's answer (Chromium caps it at 7200)."""

_ALLOWED_HEADERS = frozenset(
    {b"authorization", b"x-api-key", b"content-type", b"accept", b"idempotency-key", b"user-agent"}
)
_ALLOWED_PREFIXES = (b"x-stainless-", b"openai-", b"anthropic-")


class CorsPolicy:
    """The allowed origins (lowercase, as ``Settings`` normalised them)."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._exact = frozenset(o.encode() for o in origins if o != "*")

    def allow_origin(self, origin: bytes) -> list[tuple[bytes, bytes]] | None:
        """The headers for an answer to ``origin``, or None when it is not allowed."""
        origin = origin.strip().lower()
        if origin in self._exact:
            return [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"origin"),
                (b"access-control-expose-headers", EXPOSED_HEADERS),
            ]
        if self._any:
            return [(b"access-control-allow-origin", b"*"), (b"access-control-expose-headers", EXPOSED_HEADERS)]
        return None

    def preflight(
        self, origin: bytes, requested_headers: bytes | None, methods: bytes
    ) -> list[tuple[bytes, bytes]] | None:
        """The headers of the 204 answer to a preflight, or None when the origin is not
        allowed. Of the requested headers, those the SDKs send are allowed (listed by
        name: ``*`` would not cover ``authorization``)."""
        headers = self.allow_origin(origin)
        if headers is None:
            return None
        allowed = [h for h in _header_names(requested_headers) if _allowed_header(h)]
        headers += [(b"access-control-allow-methods", methods), (b"access-control-max-age", PREFLIGHT_MAX_AGE)]
        if allowed:
            headers.append((b"access-control-allow-headers", b", ".join(allowed)))
        return headers

    def wrap(self, send: Send, origin: bytes) -> Send:
        """``send`` with the CORS headers for ``origin`` added to the response start
        (unchanged when the origin is not allowed)."""
        extra = self.allow_origin(origin)
        if extra is None:
            return send

        async def send_with_cors(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        return send_with_cors


def cors_policy(origins: tuple[str, ...]) -> CorsPolicy | None:
    """The policy for ``Settings.cors_allow_origins``; None when CORS is off."""
    return CorsPolicy(origins) if origins else None


def _header_names(value: bytes | None) -> list[bytes]:
    if not value:
        return []
    return [h.strip().lower() for h in value.split(b",") if h.strip()]


def _allowed_header(name: bytes) -> bool:
    return name in _ALLOWED_HEADERS or name.startswith(_ALLOWED_PREFIXES)
