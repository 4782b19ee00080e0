"""Opens everything a process needs to serve or manage keys on one host.

``Core.from_settings(settings)`` is the one place that builds it — the gateway workers,
``serve``'s preparation, the management API on its own, the CLI and the tests all come
through here — so there is one way to put the store, the shared limiter region, the
digester, the key authenticator and the accounts service (``core.accounts``: its
mailer, its sign-in throttle on its own limiter region) together. (The store and limiter backends chosen
by settings, PostgreSQL and Redis, are to be picked here too.)

What cannot be opened (the data directory, the database file, the limiter region) is
a ``StateError`` whose message names the file and says what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agentrouter._core import Digester, FakeClock, KeyRecord, KeyTable, LimiterError, RateLimiter
from agentrouter.accounts.throttle import THROTTLE_FILE
from agentrouter.auth import KeyAuthenticator
from agentrouter.config import Settings
from agentrouter.datadir import DB_FILE, LIMITER_FILE, ensure_data_dir
from agentrouter.errors import AgentRouterError
from agentrouter.keys import KeyService
from agentrouter.secret import load_secret
from agentrouter.store import KeyRow, Store

if TYPE_CHECKING:
    from agentrouter.accounts.service import AccountService

__all__ = ["Core", "StateError", "key_record", "state_error"]

log = logging.getLogger("agentrouter.core")

READY_QUERY_TIMEOUT = 2.0
"""Seconds the store has to answer the readiness query."""


class StateError(AgentRouterError):
    """This host's state (data directory, database, limiter region) cannot be used;
    the message names the file and what to do about it."""


class Core:
    def __init__(
        self,
        data_dir: Path,
        store: Store,
        limiter: RateLimiter,
        digester: Digester,
        clock: FakeClock | None = None,
        *,
        settings: Settings | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.limiter = limiter
        self.digester = digester
        # Expiry is judged by the limiter's clock in the key table, so key
        # operations must read the same clock.
        self.now: Callable[[], float] = time.time if clock is None else (lambda: clock.unix)
        self.keys = KeyService(store, limiter, digester, clock=self.now)
        self.accounts: AccountService | None = None
        if settings is not None and secret is not None:
            self.accounts = _accounts(self, settings, secret, clock)
        # One key table per process, shared by every edge it serves (/v1, /api).
        self.auth = KeyAuthenticator(self.new_table(), self, limiter.generation)
        # The files this process opened (path → device and inode), to tell at
        # readiness whether they are still the ones at those paths.
        paths = [store.path] + ([Path(limiter.path)] if limiter.path is not None else [])
        self._opened = {path: _identity(path) for path in paths}

    @classmethod
    async def from_settings(cls, settings: Settings, *, clock: FakeClock | None = None) -> Core:
        """Open the data directory of ``settings`` (created if missing), its secret, its
        limiter region (``limiter_slots`` buckets) and its database (migrated)."""
        data_dir = settings.data_path
        try:
            ensure_data_dir(data_dir)
            secret = load_secret(data_dir, settings.secret_bytes)
        except OSError as exc:
            raise state_error(exc, data_dir) from exc
        region = data_dir / LIMITER_FILE
        try:
            limiter = RateLimiter(region, capacity=settings.limiter_slots, clock=clock)
        except LimiterError as exc:
            raise StateError(
                f"{exc}. The limiter region is rebuilt from the database when it is missing: stop every "
                f"AgentRouter process using {data_dir}, remove {region}, and start again (buckets start full); "
                "or set limiter_slots to the value the server uses."
            ) from exc
        try:
            store = await Store.open(data_dir / DB_FILE)
        except (sqlite3.Error, OSError) as exc:
            raise state_error(exc, data_dir) from exc
        try:
            core = cls(data_dir, store, limiter, Digester(secret), clock, settings=settings, secret=secret)
        except LimiterError as exc:
            await store.close()
            raise StateError(
                f"{exc}. The sign-in throttle's region ({data_dir / THROTTLE_FILE}) is rebuilt when it is missing: "
                "stop every AgentRouter process using the data directory, remove it, and start again; or set "
                "accounts.throttle_buckets to the value the server uses."
            ) from exc
        try:
            await core._sync_slots()
        except BaseException:
            await core.close()
            raise
        return core

    async def close(self) -> None:
        try:
            if self.accounts is not None:
                await self.accounts.aclose()
        finally:
            await self.store.close()

    async def problems(self) -> list[str]:
        """Why this process cannot serve keys right now (empty: ready). Cheap: a few
        ``stat`` calls and one trivial query. The details are logged; the reasons
        returned name the part only (they reach unauthenticated callers)."""
        problems: list[str] = []
        if not self.auth.loaded:
            problems.append("key table: not loaded yet")
        for path, identity in self._opened.items():
            part = "store" if path == self.store.path else "limiter"
            now = _identity(path)
            if now != identity:
                log.warning("not ready: %s was removed or replaced since this process opened it", path)
                problems.append(f"{part}: its file was removed or replaced; restart the server")
            elif not os.access(path, os.R_OK | os.W_OK):
                log.warning("not ready: %s is not readable and writable", path)
                problems.append(f"{part}: its file is not readable and writable")
        try:
            await asyncio.wait_for(self.store.schema_version(), READY_QUERY_TIMEOUT)
        except TimeoutError:
            problems.append(f"store: no answer within {READY_QUERY_TIMEOUT:g} s")
        except Exception as exc:  # noqa: BLE001 - any failure of the query means "not ready"
            log.warning("not ready: the store failed: %s", exc)
            problems.append("store: the query failed")
        return problems

    async def _sync_slots(self) -> None:
        """Make the shared region agree with the store. Normally a no-op; after the
        region file was lost or recreated it gives each active key its slot back."""
        for _digest, row in await self.store.active_keys_with_digests():
            if row.slot is not None and not self.limiter.slot_is_live(row.slot, row.tag):
                self.limiter.claim_slot(row.slot, row.tag)

    def new_table(self) -> KeyTable:
        return KeyTable(self.digester, self.limiter)

    async def load_table(self, table: KeyTable) -> None:
        """Rebuild ``table`` from the store: the active keys, and the deleted keys'
        digests (refused as deleted, not unknown). The generation is read first, so a
        change that lands during the read moves it again and causes one more reload."""
        generation = self.limiter.generation()
        entries = [(digest, key_record(row)) for digest, row in await self.store.active_keys_with_digests()]
        deleted = await self.store.deleted_key_digests()
        table.replace_all(entries, generation, deleted)


def _accounts(core: Core, settings: Settings, secret: bytes, clock: FakeClock | None) -> AccountService:
    from agentrouter.accounts.mail import Mailer
    from agentrouter.accounts.service import AccountService
    from agentrouter.accounts.throttle import SignInThrottle

    throttle = SignInThrottle(core.data_dir / THROTTLE_FILE, settings.accounts, secret, clock=clock)
    return AccountService(
        store=core.store,
        settings=settings,
        secret=secret,
        keys=core.keys,
        mailer=Mailer(settings.smtp, core.data_dir),
        throttle=throttle,
        clock=core.now,
    )


def key_record(row: KeyRow) -> KeyRecord:
    assert row.slot is not None, "active keys always hold a slot"
    return KeyRecord(
        row.id,
        row.slot,
        row.tag,
        row.requests,
        row.interval if row.interval is not None else 0.0,
        row.expires_at,
        row.scope,
    )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def state_error(exc: BaseException, data_dir: Path) -> StateError:
    """A database or file-system failure, told as what it means for an operator."""
    db = data_dir / DB_FILE
    text = str(exc)
    if isinstance(exc, sqlite3.Error):
        lower = text.lower()
        if "locked" in lower or "busy" in lower:
            what = (
                f"the database {db} is locked by another process ({text}); try again, "
                "or stop the process that holds it (a stuck CLI or gateway)"
            )
        elif "readonly" in lower or "read-only" in lower:
            what = f"the database {db} is read-only for this user ({text}); make it and {data_dir} writable"
        elif "not a database" in lower or "malformed" in lower or "corrupt" in lower:
            what = (
                f"the database {db} is damaged or not an AgentRouter database ({text}); restore it from a "
                "backup, or move it away to start with an empty one"
            )
        elif "unable to open" in lower:
            what = (
                f"cannot open the database {db} ({text}); check that {data_dir} and the file exist and "
                "are readable and writable by this user"
            )
        else:
            what = f"the database {db} failed: {text}"
        return StateError(what)
    if isinstance(exc, OSError):
        where = exc.filename or data_dir
        return StateError(
            f"cannot use the data directory {data_dir} ({where}: {exc.strerror or exc}); make it readable and "
            "writable by this user, or point --data-dir / AGENTROUTER_DATA_DIR at one that is"
        )
    return StateError(f"{data_dir}: {text}")
