"""The accounts tables (migration 5): users, sessions, one-time tokens, TOTP recovery
codes, OAuth identities, invitations and the audit log — on either backend.

``AccountStore`` runs on a ``SqlStore``'s driver (``_read``, ``_transaction``) like the
rest of ``store.sql``: each query is written once with ``?`` placeholders in SQL both
SQLite and PostgreSQL agree on (``ON CONFLICT … DO NOTHING``, ``DELETE … RETURNING``).
Reached as ``store.accounts``; only ``agentrouter.accounts`` (and the monitor's prune)
call it.

Every secret arrives here already digested (tokens, recovery codes), hashed
(passwords) or sealed (TOTP secrets): this module never sees one in the clear.

Concurrency: every "use once" is decided by the statement that consumes it (a
``DELETE`` or conditional ``UPDATE`` and the count of rows it changed, or ``DELETE …
RETURNING``), so of two concurrent uses — two workers, two hosts — exactly one wins.
Inserting a user takes the ``users`` lock (PostgreSQL: an advisory lock; SQLite's
write transactions are serialised anyway) so the address check and the first-admin
check cannot race; unlinking an identity takes the user's own lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from agentrouter.store.models import (
    AuditEvent,
    IdentityRow,
    InvitationRow,
    SessionRow,
    TokenRow,
    UserRow,
)
from agentrouter.store.sql import Query, q

if TYPE_CHECKING:
    from agentrouter.store.sql import SqlStore

__all__ = ["USER_UPDATABLE", "AccountStore"]

_USER_COLUMNS = (
    "id, email, email_key, display_name, password_hash, email_verified_at, role, disabled, created_at,"
    " last_login_at, password_changed_at, totp_secret, totp_enabled_at, totp_last_step"
)
_SESSION_COLUMNS = "id, user_id, method, created_at, last_seen_at, expires_at, client_ip, user_agent, device"
_TOKEN_COLUMNS = "kind, user_id, email, created_at, expires_at, detail"
_IDENTITY_COLUMNS = "provider, subject, user_id, email, created_at, last_used_at"
_INVITATION_COLUMNS = "id, email, role, created_by, created_at, expires_at, used_at, used_by"
_AUDIT_COLUMNS = "id, time, event, actor, user_id, target, method, client_ip, detail"

# Columns update_user may change (and compare).
USER_UPDATABLE: Final = frozenset(
    {
        "display_name",
        "password_hash",
        "email_verified_at",
        "role",
        "last_login_at",
        "password_changed_at",
        "totp_secret",
        "totp_enabled_at",
        "totp_last_step",
    }
)

# -- the queries ---------------------------------------------------------------------

ANY_USER = Query("SELECT 1 FROM users LIMIT 1")
USER_WITH_EMAIL = Query("SELECT 1 FROM users WHERE email_key = ?")
TAKE_SETUP_TOKEN = Query("DELETE FROM account_tokens WHERE digest = ? AND kind = 'setup'")
DELETE_SETUP_TOKENS = Query("DELETE FROM account_tokens WHERE kind = 'setup'")
USE_INVITATION = Query(
    "UPDATE invitations SET used_at = ? WHERE digest = ? AND used_at IS NULL AND expires_at > ?"
    " AND (email IS NULL OR email = ?)"
)
INVITATION_USED_BY = Query("UPDATE invitations SET used_by = ? WHERE digest = ?")
INSERT_USER = Query(
    f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, NULL, NULL, NULL)"
)
INSERT_IDENTITY = Query(
    f"INSERT INTO identities ({_IDENTITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, subject) DO NOTHING"
)
GET_USER = Query(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?")
USER_BY_EMAIL = Query(f"SELECT {_USER_COLUMNS} FROM users WHERE email_key = ?")
LIST_USERS = Query(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, id")
SET_PASSWORD = Query("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?")
DELETE_RESET_TOKENS = Query("DELETE FROM account_tokens WHERE user_id = ? AND kind = 'reset'")
DELETE_USER_SESSIONS = Query("DELETE FROM sessions WHERE user_id = ?")
DELETE_OTHER_SESSIONS = Query("DELETE FROM sessions WHERE user_id = ? AND id <> ?")
SET_DISABLED = Query("UPDATE users SET disabled = ? WHERE id = ?")
DELETE_USER_TOKENS = Query("DELETE FROM account_tokens WHERE user_id = ?")
DELETE_USER = Query("DELETE FROM users WHERE id = ?")

ENABLED_USER = Query("SELECT 1 FROM users WHERE id = ? AND disabled = 0")
TAKE_PENDING = Query("DELETE FROM account_tokens WHERE digest = ? AND kind = 'second_factor'")
INSERT_SESSION = Query(f"INSERT INTO sessions (digest, {_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
SET_LAST_LOGIN = Query("UPDATE users SET last_login_at = ? WHERE id = ?")
SESSION_BY_DIGEST = Query(
    "SELECT s.digest, "
    + ", ".join(f"s.{c.strip()}" for c in _SESSION_COLUMNS.split(","))
    + ", "
    + ", ".join(f"u.{c.strip()}" for c in _USER_COLUMNS.split(","))
    + " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.digest = ?"
)
TOUCH_SESSION = Query("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?")
LIST_SESSIONS = Query(
    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at, id"
)
PRUNE_SESSIONS = Query("DELETE FROM sessions WHERE expires_at <= ?")
PRUNE_TOKENS = Query("DELETE FROM account_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?")

DELETE_TOKENS_OF_KIND = Query("DELETE FROM account_tokens WHERE kind = ?")
DELETE_USER_TOKENS_OF_KIND = Query("DELETE FROM account_tokens WHERE kind = ? AND user_id = ?")
INSERT_TOKEN = Query(
    "INSERT INTO account_tokens (digest, kind, user_id, email, created_at, expires_at, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
GET_TOKEN = Query(
    f"SELECT digest, {_TOKEN_COLUMNS} FROM account_tokens"
    " WHERE digest = ? AND kind = ? AND (expires_at IS NULL OR expires_at > ?)"
)
TAKE_TOKEN = Query(f"DELETE FROM account_tokens WHERE digest = ? AND kind = ? RETURNING {_TOKEN_COLUMNS}")

DELETE_RECOVERY_CODES = Query("DELETE FROM recovery_codes WHERE user_id = ?")
INSERT_RECOVERY_CODE = Query("INSERT INTO recovery_codes (user_id, digest) VALUES (?, ?)")
USE_RECOVERY_CODE = Query("UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND digest = ? AND used_at IS NULL")
RECOVERY_CODES_LEFT = Query("SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL")
CLEAR_TOTP = Query("UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = ?")
DELETE_PENDING_OF_USER = Query("DELETE FROM account_tokens WHERE user_id = ? AND kind = 'second_factor'")
ACCEPT_TOTP_STEP = Query(
    "UPDATE users SET totp_last_step = ? WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)"
)

GET_IDENTITY = Query(f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE provider = ? AND subject = ?")
LIST_IDENTITIES = Query(f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE user_id = ? ORDER BY created_at, provider")
TOUCH_IDENTITY = Query(
    "UPDATE identities SET last_used_at = ?, email = COALESCE(?, email) WHERE provider = ? AND subject = ?"
)
USER_IDENTITY = Query("SELECT 1 FROM identities WHERE user_id = ? AND provider = ? AND subject = ?")
OTHER_WAYS_IN = Query(
    "SELECT (SELECT COUNT(*) FROM users WHERE id = ? AND password_hash IS NOT NULL),"
    " (SELECT COUNT(*) FROM identities WHERE user_id = ?)"
)
DELETE_IDENTITY = Query("DELETE FROM identities WHERE user_id = ? AND provider = ? AND subject = ?")

INSERT_INVITATION = Query(
    "INSERT INTO invitations (id, digest, email, role, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
GET_INVITATION = Query(f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE id = ?")
INVITATION_BY_DIGEST = Query(f"SELECT digest, {_INVITATION_COLUMNS} FROM invitations WHERE digest = ?")
LIST_INVITATIONS = Query(f"SELECT {_INVITATION_COLUMNS} FROM invitations ORDER BY created_at DESC, id")
REVOKE_INVITATION = Query("UPDATE invitations SET expires_at = ? WHERE id = ? AND used_at IS NULL AND expires_at > ?")

INSERT_AUDIT = Query(
    "INSERT INTO audit_events (time, event, actor, user_id, target, method, client_ip, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class AccountStore:
    """The accounts half of an open store (``store.accounts``)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def _fetch(self, query: Query, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        async with self._store._read() as db:
            return await db.fetch(query, args)

    # -- users -----------------------------------------------------------------

    async def insert_user(
        self,
        *,
        id: str,
        email: str,
        email_key: str,
        display_name: str | None,
        password_hash: str | None,
        email_verified_at: float | None,
        role: str,
        created_at: float,
        invitation: bytes | None = None,
        identity: tuple[str, str, str | None] | None = None,
        only_if_no_users: bool = False,
        setup_token: bytes | None = None,
    ) -> UserRow | None:
        """Insert a user; None when the address is taken (or a condition failed).

        In the same transaction: ``invitation`` (a digest) is consumed, and the user
        is not created unless it was an unused, unexpired invitation (bound to this
        address when it names one); ``identity`` (provider, subject, email) is linked;
        ``only_if_no_users`` creates the user only while there is none (the first
        admin), and ``setup_token`` (a digest) must then be a live setup token — it is
        consumed, and every other setup token deleted.
        """
        async with self._store._transaction(lock="users") as db:
            if only_if_no_users and await db.fetch(ANY_USER):
                return None
            if setup_token is not None:
                if await db.execute(TAKE_SETUP_TOKEN, (setup_token,)) == 0:
                    return None
                await db.execute(DELETE_SETUP_TOKENS)
            if await db.fetch(USER_WITH_EMAIL, (email_key,)):
                return None
            # The invitation is marked used first, its user set once the user exists
            # (used_by references users).
            if (
                invitation is not None
                and await db.execute(USE_INVITATION, (created_at, invitation, created_at, email_key)) == 0
            ):
                return None
            await db.execute(
                INSERT_USER,
                (
                    id,
                    email,
                    email_key,
                    display_name,
                    password_hash,
                    email_verified_at,
                    role,
                    created_at,
                    created_at if password_hash is not None else None,
                ),
            )
            if invitation is not None:
                await db.execute(INVITATION_USED_BY, (id, invitation))
            if identity is not None:
                provider, subject, identity_email = identity
                await db.execute(INSERT_IDENTITY, (provider, subject, id, identity_email, created_at, created_at))
        return await self.get_user(id)

    async def get_user(self, user_id: str) -> UserRow | None:
        rows = await self._fetch(GET_USER, (user_id,))
        return _user(rows[0]) if rows else None

    async def user_by_email(self, email_key: str) -> UserRow | None:
        rows = await self._fetch(USER_BY_EMAIL, (email_key,))
        return _user(rows[0]) if rows else None

    async def list_users(self) -> list[UserRow]:
        return [_user(r) for r in await self._fetch(LIST_USERS)]

    async def count_users(self, *, role: str | None = None, enabled_only: bool = False) -> int:
        clauses, args = [], []
        if role is not None:
            clauses.append("role = ?")
            args.append(role)
        if enabled_only:
            clauses.append("disabled = 0")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetch(q(f"SELECT COUNT(*) FROM users{where}"), args)
        return int(rows[0][0])

    async def update_user(self, user_id: str, changes: dict[str, Any], *, expect: dict[str, Any] | None = None) -> bool:
        """Change updatable columns; False when there is no such user (or a column of
        ``expect`` does not hold that value: a compare-and-set)."""
        unknown = set(changes) - USER_UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        if not changes:
            return await self.get_user(user_id) is not None
        assignments = ", ".join(f"{col} = ?" for col in sorted(changes))
        where, args = "id = ?", [*(changes[c] for c in sorted(changes)), user_id]
        for col, value in sorted((expect or {}).items()):
            if col not in USER_UPDATABLE:
                raise ValueError(f"cannot compare {col}")
            if value is None:
                where += f" AND {col} IS NULL"
            else:
                where += f" AND {col} = ?"
                args.append(value)
        async with self._store._transaction() as db:
            return await db.execute(q(f"UPDATE users SET {assignments} WHERE {where}"), args) > 0

    async def set_password(
        self, user_id: str, password_hash: str, *, now: float, end_sessions: bool, keep: str | None
    ) -> bool:
        """A new password hash; every reset token of the user is deleted (the old links
        must not work any more), and with ``end_sessions`` every session but ``keep``
        (a session id) ends — all in one transaction."""
        async with self._store._transaction() as db:
            if await db.execute(SET_PASSWORD, (password_hash, now, user_id)) == 0:
                return False
            await db.execute(DELETE_RESET_TOKENS, (user_id,))
            if end_sessions:
                if keep is None:
                    await db.execute(DELETE_USER_SESSIONS, (user_id,))
                else:
                    await db.execute(DELETE_OTHER_SESSIONS, (user_id, keep))
        return True

    async def set_disabled(self, user_id: str, disabled: bool) -> bool:
        """Disable (every session and pending token ends in the same transaction) or
        enable a user; False when there is no such user."""
        async with self._store._transaction() as db:
            if await db.execute(SET_DISABLED, (int(disabled), user_id)) == 0:
                return False
            if disabled:
                await db.execute(DELETE_USER_SESSIONS, (user_id,))
                await db.execute(DELETE_USER_TOKENS, (user_id,))
        return True

    async def delete_user(self, user_id: str) -> bool:
        """Delete a user; their sessions, tokens, codes and identities go with them
        (ON DELETE CASCADE), their keys become unowned (ON DELETE SET NULL: the caller
        revokes them first), audit events stay."""
        async with self._store._transaction() as db:
            return await db.execute(DELETE_USER, (user_id,)) > 0

    # -- sessions ----------------------------------------------------------------

    async def insert_session(
        self,
        *,
        id: str,
        digest: bytes,
        user_id: str,
        method: str,
        now: float,
        expires_at: float,
        client_ip: str | None,
        user_agent: str | None,
        device: str | None,
        pending: bytes | None = None,
    ) -> SessionRow | None:
        """A new session, and the user's ``last_login_at``; None when the user is gone
        or disabled (checked in the same transaction). ``pending``: the digest of the
        second-factor token this sign-in completes, consumed here (None back if it
        was used already)."""
        async with self._store._transaction() as db:
            if not await db.fetch(ENABLED_USER, (user_id,)):
                return None
            if pending is not None and await db.execute(TAKE_PENDING, (pending,)) == 0:
                return None
            await db.execute(
                INSERT_SESSION, (digest, id, user_id, method, now, now, expires_at, client_ip, user_agent, device)
            )
            await db.execute(SET_LAST_LOGIN, (now, user_id))
        return SessionRow(
            id=id,
            user_id=user_id,
            method=method,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            client_ip=client_ip,
            user_agent=user_agent,
            device=device,
        )

    async def session_by_digest(self, digest: bytes) -> tuple[bytes, SessionRow, UserRow] | None:
        """The session with this token digest and its user (the stored digest first,
        for the caller's constant-time comparison)."""
        rows = await self._fetch(SESSION_BY_DIGEST, (digest,))
        if not rows:
            return None
        r = rows[0]
        return bytes(r[0]), _session(r[1:10]), _user(r[10:])

    async def touch_session(self, session_id: str, now: float, *, older_than: float) -> None:
        """Set ``last_seen_at`` unless it is already at or after ``older_than``."""
        async with self._store._transaction() as db:
            await db.execute(TOUCH_SESSION, (now, session_id, older_than))

    async def list_sessions(self, user_id: str, *, now: float) -> list[SessionRow]:
        return [_session(r) for r in await self._fetch(LIST_SESSIONS, (user_id, now))]

    async def delete_sessions(
        self, user_id: str, *, session_id: str | None = None, except_id: str | None = None
    ) -> list[str]:
        """End sessions of ``user_id``: one (``session_id``), or all but ``except_id``.
        Returns the ids ended (empty: none matched, e.g. another user's session)."""
        where, args = "user_id = ?", [user_id]
        if session_id is not None:
            where += " AND id = ?"
            args.append(session_id)
        if except_id is not None:
            where += " AND id <> ?"
            args.append(except_id)
        async with self._store._transaction() as db:
            rows = await db.fetch(q(f"DELETE FROM sessions WHERE {where} RETURNING id"), args)
        return sorted(str(r[0]) for r in rows)

    async def prune(self, now: float) -> int:
        """Delete expired sessions and tokens; returns how many sessions."""
        async with self._store._transaction() as db:
            n = await db.execute(PRUNE_SESSIONS, (now,))
            await db.execute(PRUNE_TOKENS, (now,))
        return n

    # -- one-time tokens -------------------------------------------------------

    async def insert_token(
        self,
        *,
        digest: bytes,
        kind: str,
        user_id: str | None,
        email: str | None,
        now: float,
        expires_at: float | None,
        detail: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> None:
        """Store a token digest. ``replace``: the user's (or, without a user, every)
        earlier token of this kind is deleted first, so only the newest link works."""
        async with self._store._transaction() as db:
            if replace:
                if user_id is None:
                    await db.execute(DELETE_TOKENS_OF_KIND, (kind,))
                else:
                    await db.execute(DELETE_USER_TOKENS_OF_KIND, (kind, user_id))
            await db.execute(
                INSERT_TOKEN,
                (digest, kind, user_id, email, now, expires_at, msgspec.json.encode(detail or {}).decode()),
            )

    async def get_token(self, digest: bytes, kind: str, *, now: float) -> tuple[bytes, TokenRow] | None:
        """A live token of ``kind`` (not expired), without consuming it."""
        rows = await self._fetch(GET_TOKEN, (digest, kind, now))
        return (bytes(rows[0][0]), _token(rows[0][1:])) if rows else None

    async def take_token(self, digest: bytes, kind: str, *, now: float) -> TokenRow | None:
        """Consume a token: deleted whether live or expired; returned only when live.
        Of two concurrent uses, one gets it."""
        async with self._store._transaction() as db:
            rows = await db.fetch(TAKE_TOKEN, (digest, kind))
        if not rows:
            return None
        token = _token(rows[0])
        return token if token.expires_at is None or token.expires_at > now else None

    async def delete_tokens(self, *, kind: str, user_id: str | None = None) -> None:
        async with self._store._transaction() as db:
            if user_id is None:
                await db.execute(DELETE_TOKENS_OF_KIND, (kind,))
            else:
                await db.execute(DELETE_USER_TOKENS_OF_KIND, (kind, user_id))

    # -- TOTP ----------------------------------------------------------------------

    async def replace_recovery_codes(self, user_id: str, digests: Iterable[bytes]) -> None:
        async with self._store._transaction() as db:
            await db.execute(DELETE_RECOVERY_CODES, (user_id,))
            await db.executemany(INSERT_RECOVERY_CODE, [(user_id, d) for d in digests])

    async def use_recovery_code(self, user_id: str, digest: bytes, *, now: float) -> bool:
        """Mark an unused code used; False when there is none with this digest."""
        async with self._store._transaction() as db:
            return await db.execute(USE_RECOVERY_CODE, (now, user_id, digest)) > 0

    async def recovery_codes_left(self, user_id: str) -> int:
        return int((await self._fetch(RECOVERY_CODES_LEFT, (user_id,)))[0][0])

    async def disable_totp(self, user_id: str) -> None:
        async with self._store._transaction() as db:
            await db.execute(CLEAR_TOTP, (user_id,))
            await db.execute(DELETE_RECOVERY_CODES, (user_id,))
            await db.execute(DELETE_PENDING_OF_USER, (user_id,))

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as the last TOTP step used, if it is later than the one
        recorded (a code is accepted once; of two concurrent uses, one wins)."""
        async with self._store._transaction() as db:
            return await db.execute(ACCEPT_TOTP_STEP, (step, user_id, step)) > 0

    # -- identities ----------------------------------------------------------------

    async def get_identity(self, provider: str, subject: str) -> IdentityRow | None:
        rows = await self._fetch(GET_IDENTITY, (provider, subject))
        return _identity(rows[0]) if rows else None

    async def list_identities(self, user_id: str) -> list[IdentityRow]:
        return [_identity(r) for r in await self._fetch(LIST_IDENTITIES, (user_id,))]

    async def insert_identity(
        self, *, provider: str, subject: str, user_id: str, email: str | None, now: float
    ) -> bool:
        """Link an identity; False when it is linked already (to anyone)."""
        async with self._store._transaction() as db:
            return await db.execute(INSERT_IDENTITY, (provider, subject, user_id, email, now, now)) > 0

    async def touch_identity(self, provider: str, subject: str, *, email: str | None, now: float) -> None:
        async with self._store._transaction() as db:
            await db.execute(TOUCH_IDENTITY, (now, email, provider, subject))

    async def delete_identity(self, user_id: str, provider: str, subject: str, *, keep_one_way: bool) -> str:
        """Unlink; "ok", "missing" (not this user's) or "last" (refused by
        ``keep_one_way``: it is the user's only way to sign in — no password, no
        other identity). Decided in the transaction that deletes, under the user's lock."""
        async with self._store._transaction(lock=f"user:{user_id}") as db:
            if not await db.fetch(USER_IDENTITY, (user_id, provider, subject)):
                return "missing"
            if keep_one_way:
                passwords, identities = (await db.fetch(OTHER_WAYS_IN, (user_id, user_id)))[0]
                if not int(passwords) and int(identities) <= 1:
                    return "last"
            await db.execute(DELETE_IDENTITY, (user_id, provider, subject))
        return "ok"

    # -- invitations -----------------------------------------------------------------

    async def insert_invitation(
        self,
        *,
        id: str,
        digest: bytes,
        email: str | None,
        role: str,
        created_by: str | None,
        now: float,
        expires_at: float,
    ) -> InvitationRow:
        async with self._store._transaction() as db:
            await db.execute(INSERT_INVITATION, (id, digest, email, role, created_by, now, expires_at))
        found = await self.get_invitation(id)
        assert found is not None
        return found

    async def get_invitation(self, invitation_id: str) -> InvitationRow | None:
        rows = await self._fetch(GET_INVITATION, (invitation_id,))
        return _invitation(rows[0]) if rows else None

    async def invitation_by_digest(self, digest: bytes) -> tuple[bytes, InvitationRow] | None:
        rows = await self._fetch(INVITATION_BY_DIGEST, (digest,))
        return (bytes(rows[0][0]), _invitation(rows[0][1:])) if rows else None

    async def list_invitations(self) -> list[InvitationRow]:
        return [_invitation(r) for r in await self._fetch(LIST_INVITATIONS)]

    async def revoke_invitation(self, invitation_id: str, *, now: float) -> bool:
        """Make an unused invitation unusable (expired now); False when none."""
        async with self._store._transaction() as db:
            return await db.execute(REVOKE_INVITATION, (now, invitation_id, now)) > 0

    # -- audit -----------------------------------------------------------------------

    async def add_audit(
        self,
        *,
        time: float,
        event: str,
        actor: str | None,
        user_id: str | None,
        target: str | None,
        method: str | None,
        client_ip: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        async with self._store._transaction() as db:
            await db.execute(
                INSERT_AUDIT,
                (time, event, actor, user_id, target, method, client_ip, msgspec.json.encode(detail or {}).decode()),
            )

    async def list_audit(
        self,
        *,
        user_id: str | None = None,
        event: str | None = None,
        before: int | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Newest first. ``user_id``: the events about that account or done by that
        user (what its owner may see); None: all. ``before``: an id cursor."""
        clauses: list[str] = []
        args: list[Any] = []
        if user_id is not None:
            clauses.append("(user_id = ? OR actor = ?)")
            args += [user_id, user_id]
        if event is not None:
            clauses.append("event = ?")
            args.append(event)
        if before is not None:
            clauses.append("id < ?")
            args.append(before)
        if since is not None:
            clauses.append("time >= ?")
            args.append(since)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetch(
            q(f"SELECT {_AUDIT_COLUMNS} FROM audit_events{where} ORDER BY id DESC LIMIT ?"), (*args, limit)
        )
        return [_audit(r) for r in rows]


def _user(r: Sequence[Any]) -> UserRow:
    return UserRow(
        id=r[0],
        email=r[1],
        email_key=r[2],
        display_name=r[3],
        password_hash=r[4],
        email_verified_at=r[5],
        role=r[6],
        disabled=bool(r[7]),
        created_at=r[8],
        last_login_at=r[9],
        password_changed_at=r[10],
        totp_secret=None if r[11] is None else bytes(r[11]),
        totp_enabled_at=r[12],
        totp_last_step=r[13],
    )


def _session(r: Sequence[Any]) -> SessionRow:
    return SessionRow(
        id=r[0],
        user_id=r[1],
        method=r[2],
        created_at=r[3],
        last_seen_at=r[4],
        expires_at=r[5],
        client_ip=r[6],
        user_agent=r[7],
        device=r[8],
    )


def _token(r: Sequence[Any]) -> TokenRow:
    return TokenRow(
        kind=r[0], user_id=r[1], email=r[2], created_at=r[3], expires_at=r[4], detail=msgspec.json.decode(r[5])
    )


def _identity(r: Sequence[Any]) -> IdentityRow:
    return IdentityRow(provider=r[0], subject=r[1], user_id=r[2], email=r[3], created_at=r[4], last_used_at=r[5])


def _invitation(r: Sequence[Any]) -> InvitationRow:
    return InvitationRow(
        id=r[0], email=r[1], role=r[2], created_by=r[3], created_at=r[4], expires_at=r[5], used_at=r[6], used_by=r[7]
    )


def _audit(r: Sequence[Any]) -> AuditEvent:
    return AuditEvent(
        id=r[0],
        time=r[1],
        event=r[2],
        actor=r[3],
        user_id=r[4],
        target=r[5],
        method=r[6],
        client_ip=r[7],
        detail=msgspec.json.decode(r[8]),
    )
