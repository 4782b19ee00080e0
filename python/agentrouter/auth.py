"""The one key authenticator of every edge: ``/v1``, ``/api`` (and later the console).

``KeyAuthenticator.authenticate(authorization, x_api_key, scope, repeated)`` takes the
two credential headers as they arrived and the scope the route needs, and answers a
dialect-neutral ``AuthResult``: the key's record and the limiter's decision, or a
``Refusal`` and its message. Each edge renders a refusal in its own error shape (the
OpenAI or Anthropic body on ``/v1``, ``{"error": …}`` on ``/api``) with its status
(``Refusal.status``) and the same headers (``rate_limit_headers``).

The key is checked and charged in one native call (``KeyTable.check``: format, HMAC
digest, constant-time lookup, revoked flag, expiry, then the shared bucket); the scope
is compared after it, so a key used on the wrong API is counted and charged like any
other request of that key. Nothing here touches the database, with one exception by
design: when the shared key-set generation moved since the table was loaded (a key was
created, changed, rotated or deleted anywhere), or the table answers ``AUTH_STALE`` (the
key is not in this copy but the generation moved), the table is reloaded from the store
and the key checked again. Reloads are single-flight: concurrent requests wait for the
same one.

Header rules (no message shows more of a key than its display prefix):

* ``Authorization: Bearer <key>`` or ``x-api-key: <key>``; the same key in both is
  fine (some clients send both);
* two ``Authorization`` or two ``x-api-key`` headers, or the two headers carrying
  different keys: refused as ambiguous (401) rather than picking one;
* an ``Authorization`` header of another scheme (``Basic …``) is refused (401) unless
  ``x-api-key`` carries the key (a proxy's own credentials may sit in it);
* no key → 401; malformed, unknown, deleted, expired → 401 saying which;
* a key of another scope → 403; over its limit → 429 with the decision (the
  ``Retry-After``, ``retry-after-ms`` and ``X-RateLimit-*`` headers).

A second kind of principal (a session cookie, for the console) is meant to sit beside
this one: the edge tries it first when the request carries the cookie, and the result
type stays the same (``record`` then names no key; ``caller_id`` names the caller).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Iterable
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
from agentrouter.store.base import StoreUnavailable

__all__ = [
    "INFERENCE_SCOPE",
    "MANAGE_SCOPE",
    "AuthResult",
    "KeyAuthenticator",
    "Refusal",
    "TableLoader",
    "add_rate_limit_headers",
    "key_headers",
    "rate_limit_headers",
]

INFERENCE_SCOPE = "inference"
MANAGE_SCOPE = "manage"
RELOAD_RETRY = 1.0
"""Seconds between two reloads of the key table while the database is unavailable."""

log = logging.getLogger("agentrouter.auth")


class Refusal(enum.Enum):
    """Why a request was not let through; ``status`` is the HTTP status for it."""

    MISSING = "missing"
    NOT_BEARER = "not_bearer"
    AMBIGUOUS = "ambiguous"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    DELETED = "deleted"
    EXPIRED = "expired"
    WRONG_SCOPE = "wrong_scope"
    RATE_LIMITED = "rate_limited"

    @property
    def status(self) -> int:
        if self is Refusal.WRONG_SCOPE:
            return 403
        if self is Refusal.RATE_LIMITED:
            return 429
        return 401


_MISSING = "Missing API key. Send it as 'Authorization: Bearer sk-ar-...' or as 'x-api-key: sk-ar-...'."
_NOT_BEARER = "Unsupported Authorization scheme: use 'Authorization: Bearer sk-ar-...' or 'x-api-key: sk-ar-...'."
_MALFORMED = "Malformed API key: AgentRouter keys start with 'sk-ar-' and are 44 characters long."
_REPEATED = "Ambiguous credentials: the request has more than one Authorization or x-api-key header; send the key once."
_DIFFERENT = (
    "Ambiguous credentials: the Authorization and x-api-key headers carry different keys; "
    "send one key (in either header, or the same key in both)."
)
# What a key of the wrong scope is told, by the scope the route needs.
_SCOPE_HINTS = {
    INFERENCE_SCOPE: "cannot call the inference API; use a key with scope 'inference'.",
    MANAGE_SCOPE: (
        "cannot call the management API; it needs a key with scope 'manage' (agentrouter keys create --scope manage)."
    ),
}


class TableLoader(Protocol):
    async def load_table(self, table: KeyTable) -> None: ...


class AuthResult:
    """``refusal`` is None when the request may proceed. ``record`` is set whenever the
    key was valid (even if refused for its scope or its limit: that counts for the key),
    ``decision`` whenever its bucket was charged."""

    __slots__ = ("decision", "message", "record", "refusal")

    def __init__(
        self,
        refusal: Refusal | None,
        message: str,
        record: KeyRecord | None = None,
        decision: Decision | None = None,
    ) -> None:
        self.refusal = refusal
        self.message = message
        self.record = record
        self.decision = decision

    @property
    def caller_id(self) -> str | None:
        """The id of the authenticated caller (a key id), for logs and audit."""
        return self.record.id if self.record is not None else None


def key_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None, bool]:
    """(Authorization, x-api-key, whether either was repeated) from ASGI headers, for
    edges that do not make their own pass over the headers (the gateway's hot path
    does the same in its one pass)."""
    authorization = x_api_key = None
    repeated = False
    for name, value in headers:
        if name == b"authorization":
            repeated = repeated or authorization is not None
            authorization = value
        elif name == b"x-api-key":
            repeated = repeated or x_api_key is not None
            x_api_key = value
    return authorization, x_api_key, repeated


class KeyAuthenticator:
    """One per process (``Core.auth``): the key table and how to reload it."""

    def __init__(self, table: KeyTable, loader: TableLoader, generation: Callable[[], int]) -> None:
        self._table = table
        self._loader = loader
        self._generation = generation
        self._reload: asyncio.Future[None] | None = None
        self._loaded = False
        self._retry_at = 0.0  # while the store is unavailable: when to try a reload again

    @property
    def table(self) -> KeyTable:
        return self._table

    @property
    def loaded(self) -> bool:
        """Whether the table was loaded from the store at least once."""
        return self._loaded

    async def authenticate(
        self, authorization: bytes | None, x_api_key: bytes | None, scope: str, repeated: bool = False
    ) -> AuthResult:
        """Check the key of a request (see the module docstring) for a route of ``scope``."""
        if repeated:
            return AuthResult(Refusal.AMBIGUOUS, _REPEATED)
        raw = ""
        foreign_scheme = False
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                raw = credentials.strip().decode("latin-1")
            else:
                foreign_scheme = bool(scheme)
        if x_api_key is not None:
            other = x_api_key.strip().decode("latin-1")
            if raw and other and other != raw:
                return AuthResult(Refusal.AMBIGUOUS, _DIFFERENT)
            raw = raw or other
        if not raw:
            if foreign_scheme:
                return AuthResult(Refusal.NOT_BEARER, _NOT_BEARER)
            return AuthResult(Refusal.MISSING, _MISSING)

        table = self._table
        if not self._loaded or self._generation() != table.generation:
            await self._refresh()
        code, record, decision = table.check(raw)
        if code == AUTH_STALE:
            await self._refresh()
            code, record, decision = table.check(raw)

        if code == AUTH_OK:
            assert record is not None and decision is not None
            if record.scope != scope:
                hint = _SCOPE_HINTS.get(scope, f"cannot call this API; it needs a key with scope '{scope}'.")
                message = f"The API key {display_prefix(raw)} has scope '{record.scope}' and {hint}"
                return AuthResult(Refusal.WRONG_SCOPE, message, record, decision)
            if not decision.allowed:
                return AuthResult(Refusal.RATE_LIMITED, _limit_message(decision), record, decision)
            return AuthResult(None, "", record, decision)
        if code == AUTH_MALFORMED:
            return AuthResult(Refusal.MALFORMED, _MALFORMED)
        shown = display_prefix(raw)
        if code == AUTH_REVOKED:
            return AuthResult(Refusal.DELETED, f"Invalid API key {shown}: the key has been deleted.")
        if code == AUTH_EXPIRED:
            return AuthResult(Refusal.EXPIRED, f"Invalid API key {shown}: the key has expired.")
        # AUTH_UNKNOWN, or still stale after a reload (a key created and deleted meanwhile).
        assert code in (AUTH_UNKNOWN, AUTH_STALE), code
        return AuthResult(Refusal.UNKNOWN, f"Invalid API key {shown}: no such key.")

    async def _refresh(self) -> None:
        """``reload``, except while the database is unavailable after a first load: then
        the loaded table goes on serving (deleted keys are still refused: revocation is
        the limiter's flag, not the table), tried again at most every
        ``RELOAD_RETRY`` seconds, so requests never each wait for a dead database."""
        if self._loaded and time.monotonic() < self._retry_at:
            return
        try:
            await self.reload()
        except StoreUnavailable as exc:
            if not self._loaded:
                raise
            if not self._retry_at:
                log.error("the key table cannot be reloaded (%s); serving the keys loaded before", exc)
            self._retry_at = time.monotonic() + RELOAD_RETRY
        else:
            if self._retry_at:
                log.warning("the key table is reloaded again: the database is back")
            self._retry_at = 0.0

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
            self._loaded = True
            pending.set_result(None)
        finally:
            self._reload = None


def rate_limit_headers(decision: Decision | None) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` for a limited key, and on a
    refusal ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (which
    the OpenAI SDK reads first); nothing for an unlimited key."""
    headers: list[tuple[bytes, bytes]] = []
    if decision is not None and decision.limit is not None:
        add_rate_limit_headers(headers, decision)
    return headers


def add_rate_limit_headers(headers: list[tuple[bytes, bytes]], decision: Decision) -> None:
    """``rate_limit_headers`` appended to ``headers``, for a decision with a limit
    (the hot path's form: no list of its own)."""
    headers.append((b"x-ratelimit-limit", b"%d" % decision.limit))  # type: ignore[str-format]
    headers.append((b"x-ratelimit-remaining", b"%d" % (decision.remaining or 0)))
    headers.append((b"x-ratelimit-reset", b"%d" % (decision.reset or 0)))
    if not decision.allowed and decision.retry_after is not None:
        wait = decision.retry_after
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(wait))))
        headers.append((b"retry-after-ms", b"%d" % max(1, math.ceil(wait * 1000.0))))


def _limit_message(decision: Decision) -> str:
    if decision.reason == "cost_exceeds_limit":
        return f"This request costs more than the key's limit of {decision.limit} requests allows."
    retry = decision.retry_after
    wait = f" Retry after {retry:.3f} seconds." if retry is not None else ""
    return f"Rate limit exceeded for this API key: {decision.limit} requests per window.{wait}"
