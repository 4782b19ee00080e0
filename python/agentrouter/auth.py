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

With a shared limiter (``limiter_url``: Redis, through ``limits.failover``) the check
is in two steps: ``KeyTable.authenticate`` (native, local: format, digest, lookup,
this host's revoked flag, expiry), then one ``acquire`` round trip that reads the
key's revoked flag on every host, charges its bucket and reads the shared key-set
generation, atomically. Key changes on other hosts reach this table so:

* **revoked** (deleted; later a disabled user): refused on the request's own
  round trip (the flag is read with the bucket), whatever the announcements did;
* **any other change** (expiry, limit, rotation, a new key): the verdict carries
  the generation; when it differs from the one the table was loaded at, the table
  is reloaded from the store *before answering* and the key judged again (an
  expired or deleted key is refused; the charge stands, made under the limit
  the key had), so a change is in force from the first request after it returned;
* **a key this table does not know** (made on another host a moment ago): the
  generation is read (``Limiter.generation``, one round trip) and the table
  reloaded only when it moved, so a flood of random keys makes no reloads;
* changes made on this host (by any of its processes or the CLI) also move its
  shared-memory region's generation, which is checked first, as without Redis;
* ``follow`` (a task per process) also reloads on each announced change (pub/sub,
  or a poll every 0.5 s) so that idle processes are up to date too;
* **Redis unreachable**: the failure mode decides; ``follow`` reloads the table
  from the store about once a second (``BLIND_RELOAD_INTERVAL``), and an unknown
  key triggers at most that many reloads, so deletions made on other hosts (in
  the store) are still refused within about a second; ``closed`` refuses with 503
  (``Refusal.UNAVAILABLE``).

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
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Final, Protocol

from agentrouter._core import (
    AUTH_EXPIRED,
    AUTH_MALFORMED,
    AUTH_OK,
    AUTH_REVOKED,
    AUTH_STALE,
    AUTH_UNKNOWN,
    KeyRecord,
    KeyTable,
    display_prefix,
)
from agentrouter.limits.base import Decision as AnyDecision
from agentrouter.limits.base import Limiter, LimiterUnavailable
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
BLIND_RELOAD_INTERVAL: Final = 1.0
"""Seconds between two reloads of the key table made without knowing whether a key
changed (the shared limiter unreachable)."""
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
    UNAVAILABLE = "unavailable"
    """The shared limiter cannot be reached and its failure mode is ``closed``."""

    @property
    def status(self) -> int:
        if self is Refusal.WRONG_SCOPE:
            return 403
        if self is Refusal.RATE_LIMITED:
            return 429
        if self is Refusal.UNAVAILABLE:
            return 503
        return 401


_MISSING = "Missing API key. Send it as 'Authorization: Bearer sk-ar-...' or as 'x-api-key: sk-ar-...'."
_NOT_BEARER = "Unsupported Authorization scheme: use 'Authorization: Bearer sk-ar-...' or 'x-api-key: sk-ar-...'."
_MALFORMED = "Malformed API key: AgentRouter keys start with 'sk-ar-' and are 44 characters long."
_REPEATED = "Ambiguous credentials: the request has more than one Authorization or x-api-key header; send the key once."
_DIFFERENT = (
    "Ambiguous credentials: the Authorization and x-api-key headers carry different keys; "
    "send one key (in either header, or the same key in both)."
)
_UNAVAILABLE = "The gateway's rate limiter cannot be reached; retry shortly."
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
        decision: AnyDecision | None = None,
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

    def __init__(
        self,
        table: KeyTable,
        loader: TableLoader,
        generation: Callable[[], int],
        *,
        shared: Limiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._loader = loader
        self._generation = generation
        self._shared = shared
        self._clock = clock
        self._reload: asyncio.Future[None] | None = None
        self._loaded = False
        self._shared_generation: int | None = None
        self._blind_reload_at = 0.0
        self.reloads = 0
        """Reloads of the table since start."""
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

        if self._shared is not None:
            return await self._check_shared(raw, scope, self._shared)
        table = self._table
        if not self._loaded or self._generation() != table.generation:
            await self._refresh()
        code, record, decision = table.check(raw)
        if code == AUTH_STALE:
            await self._refresh()
            code, record, decision = table.check(raw)

        if code == AUTH_OK:
            assert record is not None and decision is not None
            # _judged, inlined: the shared-memory hot path pays no extra call.
            if record.scope != scope:
                return _wrong_scope(raw, scope, record, decision)
            if not decision.allowed:
                return AuthResult(Refusal.RATE_LIMITED, _limit_message(decision), record, decision)
            return AuthResult(None, "", record, decision)
        return _refused(code, raw)

    async def _check_shared(self, raw: str, scope: str, shared: Limiter) -> AuthResult:
        """The check with a shared limiter (see the module docstring)."""
        table = self._table
        # This host's own changes (any of its processes, the CLI) move its region's
        # generation too: seen here at once, Redis reachable or not.
        if not self._loaded or self._generation() != table.generation:
            await self._refresh()
        # The generation the table was loaded at, read with the record it gives (no
        # await between): a reload finishing while the acquire below is under way must
        # not leave this request judged on the record from before it.
        seen = self._shared_generation
        code, record = table.authenticate(raw)
        if code == AUTH_STALE or (code == AUTH_UNKNOWN and await self._maybe_reload(shared)):
            if code == AUTH_STALE:
                await self._refresh()
            seen = self._shared_generation
            code, record = table.authenticate(raw)
        if code != AUTH_OK:
            return _refused(code, raw)
        assert record is not None
        verdict = await shared.acquire(record, record.requests, record.interval)
        generation = verdict.generation
        if generation is not None and generation != seen:
            # A key changed somewhere since the table was loaded: in force before answering
            # (unless the store is down: then the loaded table serves, see _refresh). Another
            # request may have reloaded meanwhile: then only the record is read again.
            if generation != self._shared_generation:
                await self._refresh_to(generation)
            code, record = table.authenticate(raw)
            if code != AUTH_OK:
                return _refused(code, raw)
            assert record is not None
        if verdict.revoked:
            return _refused(AUTH_REVOKED, raw)
        decision = verdict.decision
        if decision is None:  # the failure mode is "closed"
            return AuthResult(Refusal.UNAVAILABLE, _UNAVAILABLE, record)
        return self._judged(raw, scope, record, decision)

    async def _maybe_reload(self, shared: Limiter) -> bool:
        """For a key the table does not know: reload if the shared generation moved
        (or, when it cannot be read, at most once per ``BLIND_RELOAD_INTERVAL``).
        Returns whether the table was reloaded."""
        try:
            generation: int | None = await shared.generation()
        except LimiterUnavailable:
            generation = None
        if generation is not None:
            if generation == self._shared_generation:
                return False
            await self._refresh_to(generation)
            return True
        return await self.reload_blind()

    async def reload_blind(self) -> bool:
        """Reload unless a reload of this kind ran less than ``BLIND_RELOAD_INTERVAL``
        seconds ago; returns whether it reloaded."""
        now = self._clock()
        if now < self._blind_reload_at:
            return False
        self._blind_reload_at = now + BLIND_RELOAD_INTERVAL
        await self._refresh()
        return True

    async def follow(self, changes: AsyncIterator[int | None]) -> None:
        """Reload the table on each value of ``changes`` (``FailoverLimiter.changes``)
        that differs from the generation the table was loaded at; on None (the shared
        limiter unreachable) reload blind, and reload on the first value after it.
        Runs until cancelled; a failing reload (the store) is logged and retried on
        the next value."""
        unsure = False
        failing = False
        async for generation in changes:
            try:
                if generation is None:
                    unsure = True
                    await self.reload_blind()
                elif unsure or generation != self._shared_generation:
                    await self.reload()
                    unsure = False
                failing = False
            except Exception as exc:  # noqa: BLE001 - the store failing: try again on the next value
                if not failing:
                    log.warning("reloading the key table failed (tried again shortly): %s", exc)
                failing = True

    def _judged(self, raw: str, scope: str, record: KeyRecord, decision: AnyDecision) -> AuthResult:
        """A valid key's result: its scope, then its limit."""
        if record.scope != scope:
            return _wrong_scope(raw, scope, record, decision)
        if not decision.allowed:
            return AuthResult(Refusal.RATE_LIMITED, _limit_message(decision), record, decision)
        return AuthResult(None, "", record, decision)

    async def _refresh_to(self, generation: int) -> None:
        """``_refresh`` until the table is loaded at ``generation`` or later. Joining a
        reload already under way is not enough: it may have read the generation (and
        the store) before this change, so then one more reload follows."""
        await self._refresh()
        loaded = self._shared_generation
        if loaded is not None and loaded < generation:
            await self._refresh()

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
        """Rebuild the table from the store; concurrent callers share one reload. With a
        shared limiter, its generation is read first (a change landing during the read
        then moves it past the value kept, and causes one more reload)."""
        pending = self._reload
        if pending is not None:
            await asyncio.shield(pending)
            return
        loop = asyncio.get_running_loop()
        self._reload = pending = loop.create_future()
        try:
            shared_generation = None
            if self._shared is not None:
                try:
                    shared_generation = await self._shared.generation()
                except LimiterUnavailable:
                    pass  # unknown: the first generation read later differs, and reloads
            await self._loader.load_table(self._table)
            self._shared_generation = shared_generation
            self.reloads += 1
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            self._loaded = True
            pending.set_result(None)
        finally:
            self._reload = None


def _wrong_scope(raw: str, scope: str, record: KeyRecord, decision: AnyDecision) -> AuthResult:
    hint = _SCOPE_HINTS.get(scope, f"cannot call this API; it needs a key with scope '{scope}'.")
    message = f"The API key {display_prefix(raw)} has scope '{record.scope}' and {hint}"
    return AuthResult(Refusal.WRONG_SCOPE, message, record, decision)


def _refused(code: int, raw: str) -> AuthResult:
    """The refusal for an authentication outcome other than AUTH_OK."""
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


def rate_limit_headers(decision: AnyDecision | None) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` for a limited key, and on a
    refusal ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (which
    the OpenAI SDK reads first); nothing for an unlimited key."""
    headers: list[tuple[bytes, bytes]] = []
    if decision is not None and decision.limit is not None:
        add_rate_limit_headers(headers, decision)
    return headers


def add_rate_limit_headers(headers: list[tuple[bytes, bytes]], decision: AnyDecision) -> None:
    """``rate_limit_headers`` appended to ``headers``, for a decision with a limit
    (the hot path's form: no list of its own)."""
    headers.append((b"x-ratelimit-limit", b"%d" % decision.limit))  # type: ignore[str-format]
    headers.append((b"x-ratelimit-remaining", b"%d" % (decision.remaining or 0)))
    headers.append((b"x-ratelimit-reset", b"%d" % (decision.reset or 0)))
    if not decision.allowed and decision.retry_after is not None:
        wait = decision.retry_after
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(wait))))
        headers.append((b"retry-after-ms", b"%d" % max(1, math.ceil(wait * 1000.0))))


def _limit_message(decision: AnyDecision) -> str:
    if decision.reason == "cost_exceeds_limit":
        return f"This request costs more than the key's limit of {decision.limit} requests allows."
    retry = decision.retry_after
    wait = f" Retry after {retry:.3f} seconds." if retry is not None else ""
    return f"Rate limit exceeded for this API key: {decision.limit} requests per window.{wait}"
