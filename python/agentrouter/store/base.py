"""The store's interface: what every backend (SQLite, PostgreSQL) does, and its errors.

Callers (the key service, the management API, the monitor, the CLI, the gateway's
usage writer) see only this ``Store``; no SQL and no connection leaves the
``agentrouter.store`` package. ``agentrouter.store.open_store(settings)`` opens the
backend the settings name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agentrouter.errors import AgentRouterError
from agentrouter.store.analytics import Bucket, ClientIp, HourlyUsage, UsageReport
from agentrouter.store.models import AlertRow, KeyRow, RequestRecord, UsageDelta

if TYPE_CHECKING:
    from agentrouter.store.accounts import AccountStore

__all__ = ["SchemaBehind", "Store", "StoreError", "StoreUnavailable"]

Backend = Literal["sqlite", "postgresql"]


class StoreError(AgentRouterError):
    """The store refused an operation (for example: no free limiter slot)."""


class OwnerNotEnabled(StoreError):
    """``insert_key`` for an owner who is gone or disabled (checked in the insert's
    own transaction, so a key cannot slip in while its owner is being disabled)."""


class StoreUnavailable(StoreError):
    """The backing database server cannot be reached (down, refusing connections, not
    answering in time). The operation did nothing, or its outcome is unknown; the
    management API answers 503 ``service_unavailable``."""


class SchemaBehind(StoreError):
    """The database's schema is older (or newer) than this AgentRouter's; the message
    says what to run (``agentrouter migrate``)."""


class Store(Protocol):
    """Keys, usage batches and the request log, analytics, alerts and leases."""

    backend: Backend
    url: str
    """Where the store is, for messages: a file path, or a PostgreSQL URL without its
    password (``redact_url``)."""

    def files(self) -> list[Path]:
        """Local files the store lives in (readiness checks they are still there)."""
        ...

    async def close(self) -> None: ...

    async def schema_version(self) -> int:
        """The schema version of the database (one cheap query: readiness uses it)."""
        ...

    # -- keys ------------------------------------------------------------------

    async def insert_key(
        self,
        *,
        id: str,
        name: str | None,
        prefix: str,
        digest: bytes,
        tag: int,
        requests: int | None,
        interval: float | None,
        metadata: dict[str, Any],
        scope: str,
        owner: str | None,
        created_at: float,
        expires_at: float | None,
        slot_capacity: int,
        claim: Callable[[int], None],
        replaces: str | None = None,
        replaced_until: float | None = None,
    ) -> KeyRow | None:
        """Insert a key with the lowest free limiter slot (``StoreError`` when none is
        below ``slot_capacity``). ``claim(slot)`` runs inside the transaction, before the
        commit, so the slot is live by the time anyone can read the key.

        ``replaces``: rotation. In the same transaction the active key ``replaces``
        (not rotated yet) gets ``expires_at = replaced_until`` and ``rotated_to`` = the
        new id; None (nothing written) when there is no such key.

        ``owner``: the user must exist and be enabled, checked in the same transaction
        (PostgreSQL: with the user's row locked ``FOR SHARE``, so a concurrent disable
        waits for this insert and then revokes its key); ``OwnerNotEnabled`` if not."""
        ...

    async def get_key(self, key_id: str) -> KeyRow | None: ...

    async def list_keys(self, *, include_deleted: bool = False, owner: str | None = None) -> list[KeyRow]:
        """Active keys (and deleted ones with ``include_deleted``), oldest first; only
        ``owner``'s when given."""
        ...

    @property
    def accounts(self) -> AccountStore:
        """The accounts tables (``store.accounts``)."""
        ...

    async def active_keys_with_digests(self) -> list[tuple[bytes, KeyRow]]:
        """Everything a gateway process needs to build its key table."""
        ...

    async def deleted_key_digests(self) -> list[bytes]:
        """The digests of deleted keys (refused as deleted rather than unknown)."""
        ...

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRow | None:
        """Change updatable columns of an active key; None when there is no such key."""
        ...

    async def delete_key(self, key_id: str, *, now: float, revoke: Callable[[int, int], None]) -> KeyRow | None:
        """Mark a key deleted and free its slot. ``revoke(slot, tag)`` runs before the
        commit: if the commit fails the key is refused anyway (fail closed)."""
        ...

    # -- usage batches and the request log ---------------------------------------

    async def add_usage(
        self,
        deltas: Sequence[UsageDelta],
        requests: Sequence[RequestRecord] = (),
        *,
        batch_id: str | None = None,
        pause: Callable[[], object] | None = None,
    ) -> bool:
        """Add per-key usage totals and the request-log rows (and rollups) of the same
        requests in one transaction. ``batch_id``: the writer's id of this batch; a batch
        whose id was committed before is skipped (False), so a retry after a lost
        answer never counts twice. ``pause`` is called between chunks of log rows."""
        ...

    async def add_requests(self, records: Sequence[RequestRecord]) -> None:
        """Request-log rows and their rollups alone (tests, imports)."""
        ...

    async def request_log(self, key_id: str | None = None, *, limit: int = 1000) -> list[RequestRecord]:
        """Request-log rows in the order they were written (oldest first)."""
        ...

    async def prune(self, *, log_before: float, rollups_before: float | None = None) -> int:
        """Delete log rows (and committed batch ids) older than ``log_before``, rollups
        older than ``rollups_before``; returns the log rows deleted."""
        ...

    async def oldest_request(self) -> float | None: ...

    async def count_requests(self, key_id: str | None = None) -> int: ...

    # -- analytics ---------------------------------------------------------------

    async def usage(
        self,
        *,
        since: float,
        until: float,
        bucket: Bucket = "hour",
        key_id: str | None = None,
        owner: str | None = None,
    ) -> UsageReport:
        """Totals, a dense series and the per-model breakdown over [since, until), of
        one key, of one owner's keys, or of every key."""
        ...

    async def keys_used_since(self, since: float) -> list[str]: ...

    async def hourly(self, key_ids: Sequence[str], since: float) -> dict[str, list[HourlyUsage]]: ...

    async def client_ips(self, key_ids: Sequence[str]) -> dict[str, list[ClientIp]]: ...

    # -- alerts ------------------------------------------------------------------

    async def record_alert(
        self, *, key_id: str, kind: str, subject: str, evidence: dict[str, Any], now: float, cooldown: float
    ) -> AlertRow | None: ...

    async def get_alert(self, alert_id: str) -> AlertRow | None: ...

    async def list_alerts(
        self,
        *,
        kind: str | None = None,
        key_id: str | None = None,
        acknowledged: bool | None = False,
        since: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 100,
        owner: str | None = None,
    ) -> list[AlertRow]: ...

    async def acknowledge_alert(self, alert_id: str, *, now: float) -> AlertRow | None: ...

    async def alerts_to_notify(
        self, *, created_after: float, max_attempts: int, limit: int = 100
    ) -> list[AlertRow]: ...

    async def note_notification(self, alert_id: str, *, delivered_at: float | None) -> None: ...

    # -- leases ------------------------------------------------------------------

    async def take_lease(self, name: str, holder: str, *, now: float, ttl: float) -> bool: ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def lease(self, name: str) -> tuple[str, float] | None:
        """(holder, expires_at) of a lease, or None."""
        ...
