"""The accounts tables on the SQLite store: users, sessions, one-time tokens, TOTP
recovery codes, OAuth identities, invitations and the audit log (migration 5).

Works on the store's own connection, like ``Analytics``: reads are one
``execute_fetchall`` each, writes go through ``store.transaction()``. Every secret
arrives here already digested (tokens, recovery codes) or hashed (passwords) or
sealed (TOTP secrets): this module never sees one in the clear. Only
``agentrouter.accounts`` calls it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import aiosqlite
import msgspec

from agentrouter.store.models import (
    AuditEvent,
    IdentityRow,
    InvitationRow,
    SessionRow,
    TokenRow,
    UserRow,
)

if TYPE_CHECKING:
    from agentrouter.store.sqlite import Store

__all__ = ["AccountStore"]

_USER_COLUMNS = (
    "id, email, email_key, display_name, password_hash, email_verified_at, role, disabled, created_at,"
    " last_login_at, password_changed_at, totp_secret, totp_enabled_at, totp_last_step"
)
_SESSION_COLUMNS = "id, user_id, method, created_at, last_seen_at, expires_at, client_ip, user_agent, device"
_INVITATION_COLUMNS = "id, email, role, created_by, created_at, expires_at, used_at, used_by"
_AUDIT_COLUMNS = "id, time, event, actor, user_id, target, method, client_ip, detail"

# Columns update_user may change.
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


class AccountStore:
    """The accounts half of an open ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._db: aiosqlite.Connection = store._db

    async def _rows(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, args))

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
        admin), and ``setup_token`` (a digest) must then be a live setup token — every
        setup token is deleted.
        """
        async with self._store.transaction() as db:
            if only_if_no_users and await _first(db, "SELECT 1 FROM users LIMIT 1"):
                return None
            if setup_token is not None:
                if not await _first(
                    db, "SELECT 1 FROM account_tokens WHERE digest = ? AND kind = 'setup'", (setup_token,)
                ):
                    return None
                await db.execute("DELETE FROM account_tokens WHERE kind = 'setup'")
            if await _first(db, "SELECT 1 FROM users WHERE email_key = ?", (email_key,)):
                return None
            if invitation is not None:
                cur = await db.execute(
                    "UPDATE invitations SET used_at = ?, used_by = ? WHERE digest = ? AND used_at IS NULL"
                    " AND expires_at > ? AND (email IS NULL OR email = ?)",
                    (created_at, None, invitation, created_at, email_key),
                )
                if cur.rowcount == 0:
                    return None
            await db.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, NULL, NULL, NULL)",
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
                await db.execute("UPDATE invitations SET used_by = ? WHERE digest = ?", (id, invitation))
            if identity is not None:
                provider, subject, identity_email = identity
                await db.execute(
                    "INSERT INTO identities (provider, subject, user_id, email, created_at, last_used_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (provider, subject, id, identity_email, created_at, created_at),
                )
        return await self.get_user(id)

    async def get_user(self, user_id: str) -> UserRow | None:
        rows = await self._rows(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    async def user_by_email(self, email_key: str) -> UserRow | None:
        rows = await self._rows(f"SELECT {_USER_COLUMNS} FROM users WHERE email_key = ?", (email_key,))
        return _user(rows[0]) if rows else None

    async def list_users(self) -> list[UserRow]:
        rows = await self._rows(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, id")
        return [_user(r) for r in rows]

    async def count_users(self, *, role: str | None = None, enabled_only: bool = False) -> int:
        clauses, args = [], []
        if role is not None:
            clauses.append("role = ?")
            args.append(role)
        if enabled_only:
            clauses.append("disabled = 0")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._rows(f"SELECT COUNT(*) FROM users{where}", args)
        return int(rows[0][0])

    async def update_user(self, user_id: str, changes: dict[str, Any], *, expect: dict[str, Any] | None = None) -> bool:
        """Change updatable columns; False when there is no such user (or a column of
        ``expect`` does not hold that value: a compare-and-set)."""
        unknown = set(changes) - USER_UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        if not changes:
            return await self.get_user(user_id) is not None
        assignments = ", ".join(f"{col} = ?" for col in changes)
        where, args = "id = ?", [*changes.values(), user_id]
        for col, value in (expect or {}).items():
            if col not in USER_UPDATABLE | {"disabled"}:
                raise ValueError(f"cannot compare {col}")
            if value is None:
                where += f" AND {col} IS NULL"
            else:
                where += f" AND {col} = ?"
                args.append(value)
        async with self._store.transaction() as db:
            cur = await db.execute(f"UPDATE users SET {assignments} WHERE {where}", args)
            return bool(cur.rowcount)

    async def set_password(
        self, user_id: str, password_hash: str, *, now: float, end_sessions: bool, keep: str | None
    ) -> bool:
        """A new password hash; with ``end_sessions`` every session of the user ends in
        the same transaction (but ``keep``, a session id), and every reset token
        (the old links must not work any more)."""
        async with self._store.transaction() as db:
            cur = await db.execute(
                "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                (password_hash, now, user_id),
            )
            if cur.rowcount == 0:
                return False
            await db.execute("DELETE FROM account_tokens WHERE user_id = ? AND kind = 'reset'", (user_id,))
            if end_sessions:
                await db.execute("DELETE FROM sessions WHERE user_id = ? AND id IS NOT ?", (user_id, keep))
        return True

    async def set_disabled(self, user_id: str, disabled: bool) -> bool:
        """Disable (every session and pending sign-in ends in the same transaction) or
        enable a user; False when there is no such user."""
        async with self._store.transaction() as db:
            cur = await db.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))
            if cur.rowcount == 0:
                return False
            if disabled:
                await db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
                await db.execute("DELETE FROM account_tokens WHERE user_id = ?", (user_id,))
        return True

    async def delete_user(self, user_id: str) -> bool:
        """Delete a user; their sessions, tokens, codes and identities go with them
        (ON DELETE CASCADE), their keys become unowned (ON DELETE SET NULL: the caller
        revokes them first), audit events stay."""
        async with self._store.transaction() as db:
            cur = await db.execute("DELETE FROM users WHERE id = ?", (user_id,))
            return bool(cur.rowcount)

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
        was already used)."""
        async with self._store.transaction() as db:
            if not await _first(db, "SELECT 1 FROM users WHERE id = ? AND disabled = 0", (user_id,)):
                return None
            if pending is not None:
                cur = await db.execute(
                    "DELETE FROM account_tokens WHERE digest = ? AND kind = 'second_factor'", (pending,)
                )
                if cur.rowcount == 0:
                    return None
            await db.execute(
                f"INSERT INTO sessions (digest, {_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (digest, id, user_id, method, now, now, expires_at, client_ip, user_agent, device),
            )
            await db.execute("UPDATE users SET last_login_at = ? WHERE id = ?", (now, user_id))
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
        cols = ", ".join(f"s.{c.strip()}" for c in _SESSION_COLUMNS.split(","))
        ucols = ", ".join(f"u.{c.strip()}" for c in _USER_COLUMNS.split(","))
        rows = await self._rows(
            f"SELECT s.digest, {cols}, {ucols} FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.digest = ?",
            (digest,),
        )
        if not rows:
            return None
        r = rows[0]
        return bytes(r[0]), _session(r[1:10]), _user(r[10:])

    async def touch_session(self, session_id: str, now: float, *, older_than: float) -> None:
        """Set ``last_seen_at`` unless it is already at or after ``older_than``."""
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?", (now, session_id, older_than)
            )

    async def list_sessions(self, user_id: str, *, now: float) -> list[SessionRow]:
        rows = await self._rows(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at, id",
            (user_id, now),
        )
        return [_session(r) for r in rows]

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
        async with self._store.transaction() as db:
            ids = [r[0] for r in await db.execute_fetchall(f"SELECT id FROM sessions WHERE {where}", args)]
            if ids:
                await db.execute(f"DELETE FROM sessions WHERE {where}", args)
        return ids

    async def prune(self, now: float) -> int:
        """Delete expired sessions and tokens; returns how many sessions."""
        async with self._store.transaction() as db:
            cur = await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            n = cur.rowcount
            await db.execute("DELETE FROM account_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
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
        async with self._store.transaction() as db:
            if replace:
                if user_id is None:
                    await db.execute("DELETE FROM account_tokens WHERE kind = ?", (kind,))
                else:
                    await db.execute("DELETE FROM account_tokens WHERE kind = ? AND user_id = ?", (kind, user_id))
            await db.execute(
                "INSERT INTO account_tokens (digest, kind, user_id, email, created_at, expires_at, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest, kind, user_id, email, now, expires_at, msgspec.json.encode(detail or {}).decode()),
            )

    async def get_token(self, digest: bytes, kind: str, *, now: float) -> tuple[bytes, TokenRow] | None:
        """A live token of ``kind`` (not expired), not consumed."""
        rows = await self._rows(
            "SELECT digest, kind, user_id, email, created_at, expires_at, detail FROM account_tokens"
            " WHERE digest = ? AND kind = ? AND (expires_at IS NULL OR expires_at > ?)",
            (digest, kind, now),
        )
        return (bytes(rows[0][0]), _token(rows[0][1:])) if rows else None

    async def take_token(self, digest: bytes, kind: str, *, now: float) -> TokenRow | None:
        """Consume a token: deleted whether live or expired; returned only when live.
        Atomic: of two concurrent uses, one gets it."""
        async with self._store.transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT kind, user_id, email, created_at, expires_at, detail FROM account_tokens"
                    " WHERE digest = ? AND kind = ?",
                    (digest, kind),
                )
            )
            if not rows:
                return None
            await db.execute("DELETE FROM account_tokens WHERE digest = ?", (digest,))
        token = _token(rows[0])
        return token if token.expires_at is None or token.expires_at > now else None

    async def delete_tokens(self, *, kind: str, user_id: str | None = None) -> None:
        async with self._store.transaction() as db:
            if user_id is None:
                await db.execute("DELETE FROM account_tokens WHERE kind = ?", (kind,))
            else:
                await db.execute("DELETE FROM account_tokens WHERE kind = ? AND user_id = ?", (kind, user_id))

    # -- TOTP recovery codes -------------------------------------------------------

    async def replace_recovery_codes(self, user_id: str, digests: Iterable[bytes]) -> None:
        async with self._store.transaction() as db:
            await db.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            await db.executemany(
                "INSERT INTO recovery_codes (user_id, digest) VALUES (?, ?)", [(user_id, d) for d in digests]
            )

    async def use_recovery_code(self, user_id: str, digest: bytes, *, now: float) -> bool:
        """Mark an unused code used; False when there is none with this digest."""
        async with self._store.transaction() as db:
            cur = await db.execute(
                "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND digest = ? AND used_at IS NULL",
                (now, user_id, digest),
            )
            return bool(cur.rowcount)

    async def recovery_codes_left(self, user_id: str) -> int:
        rows = await self._rows("SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL", (user_id,))
        return int(rows[0][0])

    async def disable_totp(self, user_id: str) -> None:
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = ?",
                (user_id,),
            )
            await db.execute("DELETE FROM recovery_codes WHERE user_id = ?", (user_id,))
            await db.execute("DELETE FROM account_tokens WHERE user_id = ? AND kind = 'second_factor'", (user_id,))

    async def accept_totp_step(self, user_id: str, step: int) -> bool:
        """Record ``step`` as the last TOTP step used, if it is later than the one
        recorded (a code is accepted once; of two concurrent uses, one wins)."""
        async with self._store.transaction() as db:
            cur = await db.execute(
                "UPDATE users SET totp_last_step = ? WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, user_id, step),
            )
            return bool(cur.rowcount)

    # -- identities ----------------------------------------------------------------

    async def get_identity(self, provider: str, subject: str) -> IdentityRow | None:
        rows = await self._rows(
            "SELECT provider, subject, user_id, email, created_at, last_used_at FROM identities"
            " WHERE provider = ? AND subject = ?",
            (provider, subject),
        )
        return _identity(rows[0]) if rows else None

    async def list_identities(self, user_id: str) -> list[IdentityRow]:
        rows = await self._rows(
            "SELECT provider, subject, user_id, email, created_at, last_used_at FROM identities"
            " WHERE user_id = ? ORDER BY created_at, provider",
            (user_id,),
        )
        return [_identity(r) for r in rows]

    async def insert_identity(
        self, *, provider: str, subject: str, user_id: str, email: str | None, now: float
    ) -> bool:
        """Link an identity; False when it is linked already (to anyone)."""
        try:
            async with self._store.transaction() as db:
                await db.execute(
                    "INSERT INTO identities (provider, subject, user_id, email, created_at, last_used_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (provider, subject, user_id, email, now, now),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    async def touch_identity(self, provider: str, subject: str, *, email: str | None, now: float) -> None:
        async with self._store.transaction() as db:
            await db.execute(
                "UPDATE identities SET last_used_at = ?, email = COALESCE(?, email) WHERE provider = ? AND subject = ?",
                (now, email, provider, subject),
            )

    async def delete_identity(self, user_id: str, provider: str, subject: str, *, keep_one_way: bool) -> str:
        """Unlink; "ok", "missing" (not this user's) or "last" (refused by
        ``keep_one_way``: it is the user's only way to sign in — no password, no
        other identity). Decided in the transaction that deletes."""
        async with self._store.transaction() as db:
            if not await _first(
                db,
                "SELECT 1 FROM identities WHERE user_id = ? AND provider = ? AND subject = ?",
                (user_id, provider, subject),
            ):
                return "missing"
            if keep_one_way:
                others = await _first(
                    db,
                    "SELECT (SELECT password_hash IS NOT NULL FROM users WHERE id = ?),"
                    " (SELECT COUNT(*) FROM identities WHERE user_id = ?)",
                    (user_id, user_id),
                )
                assert others is not None
                if not others[0] and int(others[1]) <= 1:
                    return "last"
            await db.execute(
                "DELETE FROM identities WHERE user_id = ? AND provider = ? AND subject = ?",
                (user_id, provider, subject),
            )
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
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT INTO invitations (id, digest, email, role, created_by, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (id, digest, email, role, created_by, now, expires_at),
            )
        found = await self.get_invitation(id)
        assert found is not None
        return found

    async def get_invitation(self, invitation_id: str) -> InvitationRow | None:
        rows = await self._rows(f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE id = ?", (invitation_id,))
        return _invitation(rows[0]) if rows else None

    async def invitation_by_digest(self, digest: bytes) -> tuple[bytes, InvitationRow] | None:
        rows = await self._rows(f"SELECT digest, {_INVITATION_COLUMNS} FROM invitations WHERE digest = ?", (digest,))
        return (bytes(rows[0][0]), _invitation(rows[0][1:])) if rows else None

    async def list_invitations(self) -> list[InvitationRow]:
        rows = await self._rows(f"SELECT {_INVITATION_COLUMNS} FROM invitations ORDER BY created_at DESC, id")
        return [_invitation(r) for r in rows]

    async def revoke_invitation(self, invitation_id: str, *, now: float) -> bool:
        """Make an unused invitation unusable (expired now); False when none."""
        async with self._store.transaction() as db:
            cur = await db.execute(
                "UPDATE invitations SET expires_at = ? WHERE id = ? AND used_at IS NULL AND expires_at > ?",
                (now, invitation_id, now),
            )
            return bool(cur.rowcount)

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
        async with self._store.transaction() as db:
            await db.execute(
                "INSERT INTO audit_events (time, event, actor, user_id, target, method, client_ip, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        rows = await self._rows(
            f"SELECT {_AUDIT_COLUMNS} FROM audit_events{where} ORDER BY id DESC LIMIT ?", (*args, limit)
        )
        return [_audit(r) for r in rows]


async def _first(db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    for row in await db.execute_fetchall(sql, args):
        return row
    return None


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
