"""The one place a request is authenticated and charged against its key's limit.

``Authenticator.authenticate(authorization, x_api_key)`` takes the two header values
as they arrived and answers an ``AuthResult``: the key's record and the limiter's
decision, or the refusal to send. It touches no database: the key table (digest →
record) and the buckets live in the native core. The one exception is by design:
when the table answers ``AUTH_STALE`` (the key is not in this worker's copy, but the
shared key-set generation moved since the copy was made: a key was created while we
serve), the table is reloaded from the store once and the key checked again. Reloads
are single-flight: concurrent requests wait for the same one.

Refusals and their messages (no message shows more of a key than its display prefix):

* no key, or an ``Authorization`` header that is not ``Bearer`` → 401
* malformed (prefix, length, alphabet, checksum), checked without a lookup → 401
* unknown, deleted, expired → 401
* a key whose scope is not ``inference`` (a management key) → 403 permission error
* over the limit → 429, with the decision for the ``Retry-After`` headers
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from agentrouter._core import (
    AUTH_EXPIRED,
    AUTH_MALFORMED,
    AUTH_OK,
    AUTH_REVOKED,
    AUTH_STALE,
    AUTH_UNKNOWN,
    Decision,
    KeyRecord,
    KeyTable,
    display_prefix,
)
from agentrouter.gateway.errors import ErrorKind, Kinds

__all__ = ["INFERENCE_SCOPE", "AuthResult", "Authenticator", "TableLoader"]

INFERENCE_SCOPE = "inference"

_MISSING = "Missing API key. Send it as 'Authorization: Bearer sk-ar-...' or as 'x-api-key: sk-ar-...'."
_NOT_BEARER = "Unsupported Authorization scheme: use 'Authorization: Bearer sk-ar-...' or 'x-api-key: sk-ar-...'."
_MALFORMED = "Malformed API key: AgentRouter keys start with 'sk-ar-' and are 44 characters long."


class TableLoader(Protocol):
    async def load_table(self, table: KeyTable) -> None: ...


class AuthResult:
    """``error`` is None when the request may proceed; ``record`` is set whenever the
    key was valid (even if refused for its limit or scope: that counts for the key)."""

    __slots__ = ("decision", "error", "message", "record")

    def __init__(
        self,
        error: ErrorKind | None,
        message: str,
        record: KeyRecord | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.error = error
        self.message = message
        self.record = record
        self.decision = decision


class Authenticator:
    def __init__(self, table: KeyTable, loader: TableLoader, generation: Callable[[], int]) -> None:
        self._table = table
        self._loader = loader
        self._generation = generation
        self._reload: asyncio.Future[None] | None = None

    @property
    def table(self) -> KeyTable:
        return self._table

    async def authenticate(self, authorization: bytes | None, x_api_key: bytes | None) -> AuthResult:
        raw = ""
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                raw = credentials.strip().decode("latin-1")
            elif x_api_key is None and scheme:
                return AuthResult(Kinds.INVALID_KEY, _NOT_BEARER)
        if not raw and x_api_key is not None:
            raw = x_api_key.strip().decode("latin-1")
        if not raw:
            return AuthResult(Kinds.MISSING_KEY, _MISSING)

        if self._generation() != self._table.generation:
            await self.reload()
        code, record, decision = self._table.check(raw)
        if code == AUTH_STALE:
            await self.reload()
            code, record, decision = self._table.check(raw)

        if code == AUTH_OK:
            assert record is not None and decision is not None
            if record.scope != INFERENCE_SCOPE:
                return AuthResult(
                    Kinds.WRONG_SCOPE,
                    f"The API key {display_prefix(raw)} has scope '{record.scope}' and cannot call the "
                    "inference API; use a key with scope 'inference'.",
                    record,
                    decision,
                )
            if not decision.allowed:
                return AuthResult(Kinds.RATE_LIMITED, _limit_message(decision), record, decision)
            return AuthResult(None, "", record, decision)
        if code == AUTH_MALFORMED:
            return AuthResult(Kinds.INVALID_KEY, _MALFORMED)
        shown = display_prefix(raw)
        if code == AUTH_REVOKED:
            return AuthResult(Kinds.INVALID_KEY, f"Invalid API key {shown}: the key has been deleted.")
        if code == AUTH_EXPIRED:
            return AuthResult(Kinds.INVALID_KEY, f"Invalid API key {shown}: the key has expired.")
        # AUTH_UNKNOWN, or still stale after a reload (a key deleted meanwhile).
        assert code in (AUTH_UNKNOWN, AUTH_STALE), code
        return AuthResult(Kinds.INVALID_KEY, f"Invalid API key {shown}: no such key.")

    async def reload(self) -> None:
        """Rebuild the table from the store; concurrent callers share one reload."""
        pending = self._reload
        if pending is not None:
            await asyncio.shield(pending)
            return
        loop = asyncio.get_running_loop()
        self._reload = pending = loop.create_future()
        try:
            await self._loader.load_table(self._table)
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            pending.set_result(None)
        finally:
            self._reload = None


def _limit_message(decision: Decision) -> str:
    if decision.reason == "cost_exceeds_limit":
        return f"This request costs more than the key's limit of {decision.limit} requests allows."
    retry = decision.retry_after
    wait = f" Retry after {retry:.3f} seconds." if retry is not None else ""
    return f"Rate limit exceeded for this API key: {decision.limit} requests per window.{wait}"
