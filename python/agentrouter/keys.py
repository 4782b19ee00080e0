"""The key service: every change to API keys goes through here (CLI, management API).

It keeps three things in step: the store (source of truth), the limiter (slot
ownership in this host's region; the revoked flags and the key-set generation of
every host, through ``Limiter.changed``) and the digests. A change is visible to
every running gateway process, on every host sharing the limiter, on its next
request: deletion through the revoked flag, everything else through the generation
counter, which makes each process reload its key table once.

Keys belong to people. Every method takes an ``actor`` (``agentrouter.actor``):
the operator (``INSTANCE``: the CLI, a manage key without an owner — the default,
which is what every edge had before accounts) sees and changes every key; a user
sees and changes their own keys only, an admin everyone's. A key the actor may not
see is ``KeyNotFound`` (404), exactly like a key that does not exist. A key created
by a user is owned by that user, and only once their email address is verified
(``EmailNotVerified``); a key created by the operator is an instance key unless it
names an ``owner``. ``revoke_owned`` deletes every key of a user (disabled or
deleted accounts): refused on the next request on every worker, like any deletion.
Each change is written to the audit log when the service has one.
"""

from __future__ import annotations

import builtins
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from agentrouter._core import Digester, RateLimiter, display_prefix, generate_key
from agentrouter.actor import INSTANCE, Actor
from agentrouter.audit import AuditLog
from agentrouter.errors import AgentRouterError
from agentrouter.limits import KeyId, Limiter, SharedMemoryLimiter
from agentrouter.store import KeyRow, Store
from agentrouter.store.base import OwnerNotEnabled
from agentrouter.store.models import SCOPES

MAX_REQUESTS: Final = 2**32 - 1
MAX_INTERVAL: Final = 10 * 365 * 86400.0  # ten years, the limiter's bound
DEFAULT_INTERVAL: Final = 60.0
MAX_NAME: Final = 200
MAX_METADATA_DEPTH: Final = 32


class KeyInputError(AgentRouterError, ValueError):
    """Bad input for a key operation; nothing was written."""


class KeyNotFound(AgentRouterError, LookupError):
    """No active key has that id."""


class KeyConflict(AgentRouterError):
    """The key's state does not allow the operation (already rotated, expired)."""


class EmailNotVerified(AgentRouterError):
    """A user whose email address is not verified yet may not create keys (403,
    code ``email_not_verified``)."""

    status = 403
    code = "email_not_verified"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class CreatedKey(msgspec.Struct, kw_only=True):
    """A new key and its row. ``key`` is the only time the plaintext exists."""

    key: str
    row: KeyRow


class KeyService:
    def __init__(
        self,
        store: Store,
        limiter: RateLimiter,
        digester: Digester,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
        *,
        limits: Limiter | None = None,
    ) -> None:
        self._store = store
        self._limiter = limiter
        self._limits = limits if limits is not None else SharedMemoryLimiter(limiter)
        self._digester = digester
        self._clock = clock
        self._audit = audit

    def use_audit(self, audit: AuditLog) -> None:
        """Write key changes to ``audit`` from now on (set once by the core)."""
        self._audit = audit

    async def _record(self, event: str, actor: Actor, row: KeyRow, **detail: Any) -> None:
        if self._audit is not None:
            await self._audit.record(event, actor=actor, user_id=row.owner, target=row.id, detail=detail or None)

    async def create(
        self,
        *,
        name: str | None = None,
        requests: int | None = None,
        interval: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        expires_in: float | None = None,
        scope: str = "inference",
        owner: str | None = None,
        actor: Actor = INSTANCE,
    ) -> CreatedKey:
        """A new key. A user actor's key is theirs (``owner`` may name another user
        only for an admin); the operator's is an instance key unless ``owner`` names
        a user (``KeyInputError`` when there is no such user)."""
        now = self._clock()
        requests, interval = validate_limit(requests, interval)
        if expires_in is not None and not (expires_in > 0 and math.isfinite(expires_in)):
            raise KeyInputError("expires_in must be a positive duration")
        if actor.kind == "user":
            if not actor.email_verified:
                raise EmailNotVerified(
                    "verify your email address before creating keys: follow the link in the verification "
                    "mail, or ask for a new one"
                )
            if owner is None or not actor.is_admin:
                owner = actor.user_id
        if owner is not None and owner != actor.user_id:
            owner_row = await self._store.accounts.get_user(owner)
            if owner_row is None:
                raise KeyInputError(f"owner: no user with id {owner!r}")
            if owner_row.disabled:  # a disabled user's keys do not work: none is made for them
                raise KeyInputError(f"owner: the user {owner!r} is disabled; enable them first")
        created = await self._insert(
            name=validate_name(name),
            requests=requests,
            interval=interval,
            metadata=validate_metadata(metadata if metadata is not None else {}),
            scope=validate_scope(scope),
            owner=owner,
            expires_at=None if expires_in is None else now + expires_in,
            now=now,
        )
        await self._record("key_created", actor, created.row, name=created.row.name, scope=created.row.scope)
        return created

    async def _insert(
        self,
        *,
        name: str | None,
        requests: int | None,
        interval: float | None,
        metadata: dict[str, Any],
        scope: str,
        owner: str | None,
        expires_at: float | None,
        now: float,
        key_id: str | None = None,
        replaces: str | None = None,
        replaced_until: float | None = None,
    ) -> CreatedKey:
        raw = generate_key()
        tag = secrets.randbits(63) | 1  # non-zero, fits SQLite's signed 64-bit integer
        new_id = key_id or new_key_id()
        try:
            row = await self._store.insert_key(
                id=new_id,
                name=name,
                prefix=display_prefix(raw),
                digest=self._digester.digest(raw),
                tag=tag,
                requests=requests,
                interval=interval,
                metadata=metadata,
                scope=scope,
                owner=owner,
                created_at=now,
                expires_at=expires_at,
                slot_capacity=self._limiter.capacity,
                claim=lambda slot: self._limiter.claim_slot(slot, tag),
                replaces=replaces,
                replaced_until=replaced_until,
            )
        except OwnerNotEnabled:
            # Disabled or deleted since the caller's checks: no key is made for them.
            assert owner is not None
            if await self._store.accounts.get_user(owner) is None:
                raise KeyInputError(f"owner: no user with id {owner!r}") from None
            raise KeyInputError(f"owner: the user {owner!r} is disabled; enable them first") from None
        if row is None:
            raise KeyNotFound(f"no active key with id {replaces!r} (deleted or rotated meanwhile)")
        await self._limits.changed()
        return CreatedKey(key=raw, row=row)

    async def list(
        self, *, include_deleted: bool = False, actor: Actor = INSTANCE, owner: str | None = None
    ) -> list[KeyRow]:
        """The keys ``actor`` may see: a member's own; an admin's or the operator's
        all, or only ``owner``'s when given."""
        if not actor.is_admin:
            owner = actor.user_id
        return await self._store.list_keys(include_deleted=include_deleted, owner=owner)

    async def get(self, key_id: str, *, actor: Actor = INSTANCE) -> KeyRow:
        """The key (deleted ones too); ``KeyNotFound`` when there is none or ``actor``
        may not see it."""
        row = await self._store.get_key(key_id)
        if row is None or not actor.may_see(row.owner):
            raise KeyNotFound(f"no key with id {key_id!r}")
        return row

    async def update(
        self,
        key_id: str,
        *,
        name: str | _Unset | None = UNSET,
        requests: int | _Unset | None = UNSET,
        interval: float | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset = UNSET,
        expires_at: float | _Unset | None = UNSET,
        actor: Actor = INSTANCE,
    ) -> KeyRow:
        current = await self.get(key_id, actor=actor)
        if current.state != "active":
            raise KeyNotFound(f"key {key_id!r} is deleted")
        changes: dict[str, Any] = {}
        if not isinstance(name, _Unset):
            changes["name"] = validate_name(name)
        if not isinstance(requests, _Unset) or not isinstance(interval, _Unset):
            new_requests = current.requests if isinstance(requests, _Unset) else requests
            new_interval = current.interval if isinstance(interval, _Unset) else interval
            if new_requests is None and not isinstance(requests, _Unset):
                new_interval = None  # removing the limit removes its interval too
            changes["requests"], changes["interval"] = validate_limit(new_requests, new_interval)
        if not isinstance(metadata, _Unset):
            changes["metadata"] = validate_metadata(metadata)
        if not isinstance(expires_at, _Unset):
            if expires_at is not None and not math.isfinite(expires_at):
                raise KeyInputError("expires_at must be a finite Unix time")
            changes["expires_at"] = expires_at
        row = await self._store.update_key(key_id, changes)
        if row is None:
            raise KeyNotFound(f"no active key with id {key_id!r}")
        await self._limits.changed()
        await self._record("key_updated", actor, row, fields=sorted(changes))
        return row

    async def delete(self, key_id: str, *, actor: Actor = INSTANCE) -> KeyRow:
        await self.get(key_id, actor=actor)  # not found for an actor who may not see it
        row = await self._delete(key_id)
        if row is None:
            raise KeyNotFound(f"no active key with id {key_id!r}")
        await self._record("key_deleted", actor, row)
        return row

    async def _delete(self, key_id: str) -> KeyRow | None:
        revoked: list[KeyId] = []

        def revoke(slot: int, tag: int) -> None:
            # This host's region at once, before the commit (fail closed); False (ignored)
            # means the slot has a new owner already: nothing left to refuse.
            self._limiter.revoke_slot(slot, tag)
            revoked.append(KeyId(key_id, slot, tag))

        row = await self._store.delete_key(key_id, now=self._clock(), revoke=revoke)
        if row is not None:
            await self._limits.changed(revoked)
        return row

    async def revoke_owned(self, owner: str, *, actor: Actor = INSTANCE, reason: str) -> builtins.list[KeyRow]:
        """Delete every active key of ``owner`` (a disabled or deleted user): refused on
        the next request on every worker. Returns the keys deleted."""
        deleted = []
        for row in await self._store.list_keys(owner=owner):
            gone = await self._delete(row.id)
            if gone is not None:
                deleted.append(gone)
                await self._record("key_deleted", actor, gone, reason=reason)
        return deleted

    async def rotate(self, key_id: str, *, grace: float, actor: Actor = INSTANCE) -> CreatedKey:
        """A new key with the same settings; the old one works until ``grace`` seconds
        from now, then it is refused as expired."""
        if not (grace >= 0 and math.isfinite(grace)):
            raise KeyInputError("grace must be a duration of zero or more")
        old = await self.get(key_id, actor=actor)
        if old.state != "active":
            raise KeyNotFound(f"key {key_id!r} is deleted")
        now = self._clock()
        # One successor per key: rotating twice would leave two live replacements,
        # and the second would inherit the grace-period expiry of the first rotation.
        if old.rotated_to is not None:
            raise KeyConflict(f"key {key_id} was already rotated to {old.rotated_to}; rotate that one")
        if old.expires_at is not None and old.expires_at <= now:
            raise KeyConflict(f"key {key_id} has expired; create a new key instead")
        old_until = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
        # The old key is retired in the new one's transaction (``replaces``).
        created = await self._insert(  # same settings, same expiry (still in the future)
            name=old.name,
            requests=old.requests,
            interval=old.interval,
            metadata=old.metadata,
            scope=old.scope,
            owner=old.owner,
            expires_at=old.expires_at,
            now=now,
            replaces=key_id,
            replaced_until=old_until,
        )
        await self._record("key_rotated", actor, old, new_key=created.row.id, grace_seconds=grace)
        return created


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def validate_limit(requests: int | None, interval: float | None) -> tuple[int | None, float | None]:
    """(requests, interval) as stored: both None for no limit."""
    if requests is None:
        if interval is not None:
            raise KeyInputError("an interval needs a request count: give requests too")
        return None, None
    if isinstance(requests, bool) or not isinstance(requests, int):
        raise KeyInputError("requests must be a whole number")
    if not 1 <= requests <= MAX_REQUESTS:
        raise KeyInputError(f"requests must be between 1 and {MAX_REQUESTS}")
    if interval is None:
        interval = DEFAULT_INTERVAL
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise KeyInputError("interval must be a number of seconds")
    if not (0 < interval <= MAX_INTERVAL):
        raise KeyInputError(f"interval must be more than 0 and at most {int(MAX_INTERVAL)} seconds")
    return requests, float(interval)


def validate_metadata(metadata: object) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise KeyInputError('metadata must be a JSON object, e.g. {"environment": "production"}')
    if not all(isinstance(k, str) for k in metadata):
        raise KeyInputError("metadata keys must be strings")
    check_metadata_depth(metadata)
    try:
        # Round-trip: refuses values JSON cannot hold and detaches from the caller's object.
        result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(dict(metadata)))
    except (TypeError, msgspec.EncodeError) as exc:
        raise KeyInputError(f"metadata must be JSON: {exc}") from None
    return result


def check_metadata_depth(metadata: object) -> None:
    """Refuse metadata nested deeper than ``MAX_METADATA_DEPTH``: labels are flat, and
    deep values would only reach the JSON encoders' recursion limits further on."""
    if _nesting(metadata) > MAX_METADATA_DEPTH:
        raise KeyInputError(f"metadata must not be nested more than {MAX_METADATA_DEPTH} levels deep")


def _nesting(value: object) -> int:
    """How many arrays and objects deep ``value`` goes (iteratively: no recursion);
    stops counting past ``MAX_METADATA_DEPTH``."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def validate_name(name: str | None) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise KeyInputError("name must be text")
    name = name.strip()
    if "\x00" in name:
        raise KeyInputError("name must not contain NUL characters")
    if len(name) > MAX_NAME:
        raise KeyInputError(f"name must be at most {MAX_NAME} characters")
    return name or None


def validate_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise KeyInputError(f"scope must be one of: {', '.join(SCOPES)}")
    return scope
