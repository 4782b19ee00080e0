"""The audit log of security events: who did what to whose account, when, from where.

Events (``EVENTS``): sign-in success and failure (with the method), sign-out,
session ended, password changed or reset, email verified, TOTP enabled, disabled
and recovery codes renewed, identity linked and unlinked, user created, disabled,
enabled, deleted and role changed, invitation created, key created, updated,
rotated and deleted. Each has a time, an actor (a user id, ``key:<id>``, ``cli``,
or none for an unauthenticated caller), the account it is about (``user_id``: its
owner sees it), a target (a session, key, identity or invitation id), a method and
the client IP. Never a key, token, code or password: ``detail`` carries only names
and reasons. Users see their own events (about them or by them); admins see all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from agentrouter.accounts.errors import AccountNotFound
from agentrouter.actor import Actor
from agentrouter.store.accounts import AccountStore
from agentrouter.store.models import AuditEvent

__all__ = ["EVENTS", "AuditLog"]

EVENTS: Final = (
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "session_ended",
    "password_changed",
    "password_reset",
    "email_verified",
    "totp_enabled",
    "totp_disabled",
    "recovery_codes_renewed",
    "identity_linked",
    "identity_unlinked",
    "user_created",
    "user_disabled",
    "user_enabled",
    "user_deleted",
    "role_changed",
    "invitation_created",
    "key_created",
    "key_updated",
    "key_rotated",
    "key_deleted",
)


class AuditLog:
    def __init__(self, store: AccountStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def record(
        self,
        event: str,
        *,
        actor: Actor | None = None,
        actor_name: str | None = None,
        user_id: str | None = None,
        target: str | None = None,
        method: str | None = None,
        client_ip: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one event. ``actor`` gives the actor's name and, unless given, the
        client IP; ``actor_name`` names one without an ``Actor`` (a sign-in)."""
        assert event in EVENTS, event
        await self._store.add_audit(
            time=self._clock(),
            event=event,
            actor=actor.audit_name if actor is not None else actor_name,
            user_id=user_id,
            target=target,
            method=method,
            client_ip=client_ip if client_ip is not None or actor is None else actor.client_ip,
            detail=detail,
        )

    async def events(
        self,
        actor: Actor,
        *,
        user_id: str | None = None,
        event: str | None = None,
        before: int | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Newest first: an admin's choice (``user_id``, or None for all); a member's own
        events only (about their account or by them) — asking for another account's is
        ``AccountNotFound``, as if it did not exist."""
        if not actor.is_admin:
            if user_id is not None and user_id != actor.user_id:
                raise AccountNotFound(f"no user with id {user_id!r}")
            user_id = actor.user_id
        return await self._store.list_audit(user_id=user_id, event=event, before=before, since=since, limit=limit)
