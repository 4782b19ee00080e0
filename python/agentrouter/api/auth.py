"""Authentication of management-API calls: an ``sk-ar-`` key with scope ``manage``.

The same native key table as the gateway (digest → record, revoked flags and expiry
in the shared region), so a key deleted anywhere is refused on the next call here
too. The table is reloaded from the store when the shared key-set generation moved
(a key was created, changed or rotated) or when it answers ``AUTH_STALE``; reloads
are single-flight.

Refusals: missing, malformed, unknown, deleted or expired key → 401; a key of
another scope (``inference``) → 403; over the management key's own rate limit → 429
with ``Retry-After``. No message shows more of a key than its display prefix.
"""

from __future__ import annotations

import asyncio
import math

from agentrouter._core import (
    AUTH_EXPIRED,
    AUTH_MALFORMED,
    AUTH_OK,
    AUTH_REVOKED,
    AUTH_STALE,
    Decision,
    KeyRecord,
    display_prefix,
)
from agentrouter.api.errors import ApiError
from agentrouter.core import Core

MANAGE_SCOPE = "manage"
_WWW_AUTH = [(b"www-authenticate", b'Bearer realm="agentrouter-api"')]


class ManageAuth:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._table = core.new_table()
        self._loaded = False
        self._lock = asyncio.Lock()

    async def _reload(self, seen_generation: int | None) -> None:
        async with self._lock:
            # Another caller may have reloaded while this one waited.
            if self._loaded and seen_generation is not None and self._table.generation != seen_generation:
                return
            await self._core.load_table(self._table)
            self._loaded = True

    async def authenticate(self, authorization: bytes | None, x_api_key: bytes | None) -> tuple[KeyRecord, Decision]:
        raw = _raw_key(authorization, x_api_key)
        if not self._loaded or self._table.generation != self._core.limiter.generation():
            await self._reload(self._table.generation if self._loaded else None)
        code, record = self._table.authenticate(raw)
        if code == AUTH_STALE:
            await self._reload(self._table.generation)
            code, record = self._table.authenticate(raw)
        if code != AUTH_OK or record is None:
            raise ApiError(401, _refusal(code, raw), headers=_WWW_AUTH)
        if record.scope != MANAGE_SCOPE:
            raise ApiError(
                403,
                f"The API key {display_prefix(raw)} has scope '{record.scope}'; the management API needs a key "
                "with scope 'manage' (agentrouter keys create --scope manage).",
            )
        decision = self._core.limiter.acquire_slot(record.slot, record.requests, record.interval)
        if not decision.allowed:
            wait = decision.retry_after
            message = f"Rate limit exceeded for this management key: {decision.limit} requests per window."
            if wait is not None:
                message += f" Retry after {wait:.3f} seconds."
            raise ApiError(429, message, headers=rate_limit_headers(decision))
        return record, decision


def rate_limit_headers(decision: Decision | None) -> list[tuple[bytes, bytes]]:
    if decision is None or decision.limit is None:
        return []
    headers = [
        (b"x-ratelimit-limit", b"%d" % decision.limit),
        (b"x-ratelimit-remaining", b"%d" % (decision.remaining or 0)),
        (b"x-ratelimit-reset", b"%d" % (decision.reset or 0)),
    ]
    if not decision.allowed and decision.retry_after is not None:
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(decision.retry_after))))
    return headers


def _raw_key(authorization: bytes | None, x_api_key: bytes | None) -> str:
    raw = ""
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            raw = credentials.strip().decode("latin-1")
        elif x_api_key is None:
            raise ApiError(
                401,
                "Unsupported Authorization scheme: use 'Authorization: Bearer sk-ar-...' or 'x-api-key: sk-ar-...'.",
                headers=_WWW_AUTH,
            )
    if not raw and x_api_key is not None:
        raw = x_api_key.strip().decode("latin-1")
    if not raw:
        raise ApiError(
            401,
            "Missing API key. Send a management key as 'Authorization: Bearer sk-ar-...' or 'x-api-key: sk-ar-...'.",
            headers=_WWW_AUTH,
        )
    return raw


def _refusal(code: int, raw: str) -> str:
    if code == AUTH_MALFORMED:
        return "Malformed API key: AgentRouter keys start with 'sk-ar-' and are 44 characters long."
    shown = display_prefix(raw)
    if code == AUTH_REVOKED:
        return f"Invalid API key {shown}: the key has been deleted."
    if code == AUTH_EXPIRED:
        return f"Invalid API key {shown}: the key has expired."
    return f"Invalid API key {shown}: no such key."
