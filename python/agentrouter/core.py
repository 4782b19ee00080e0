"""Opens everything a process needs to serve or manage keys on one host.

``Core.from_settings(settings)`` is the one place that builds it — the gateway workers,
``serve``'s preparation, the management API on its own, the CLI and the tests all come
through here — so there is one way to put the store, the shared limiter region, the
digester, the key authenticator and the accounts service (``core.accounts``: its
mailer, its sign-in throttle on its own limiter region) together, and one place that
picks the limiter backend from the settings:

* no ``limiter_url``: this host's shared-memory region decides alone (``limits``
  is a ``SharedMemoryLimiter``; the hot path stays the one native call
  ``KeyTable.check``);
* ``limiter_url``: ``limits`` is a ``FailoverLimiter`` over a ``RedisLimiter``, with
  the shared-memory region as its ``local`` fallback (``limiter_failure_mode``).
  Redis being down at start-up is not an error: the core starts in the failure
  mode and Redis is probed from then on. ``follow_changes`` starts the task that
  reloads the key table when the shared generation moves (pub/sub and a poll),
  and from the store about once a second while Redis cannot be reached.

The store is the one ``store_url`` names (``store.open_store``: the SQLite file by
default, or PostgreSQL).

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
from agentrouter.limits import FailureMode, Limiter, SharedMemoryLimiter
from agentrouter.limits.failover import FailoverLimiter
from agentrouter.secret import load_secret
from agentrouter.store import KeyRow, Store, StoreUnavailable, open_store

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
        settings: Settings,
        secret: bytes,
        limits: Limiter | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.limiter = limiter
        """This host's shared-memory region (slots, the local buckets)."""
        self.limits: Limiter = limits if limits is not None else SharedMemoryLimiter(limiter)
        """The limiter interface every edge and the key service use."""
        self.remote = self.limits if isinstance(self.limits, FailoverLimiter) else None
        """The Redis limiter (with its failure mode), or None in shared-memory mode."""
        self.digester = digester
        # Expiry is judged by the limiter's clock in the key table, so key
        # operations must read the same clock.
        self.now: Callable[[], float] = time.time if clock is None else (lambda: clock.unix)
        self.keys = KeyService(store, limiter, digester, clock=self.now, limits=self.limits)
        self.accounts: AccountService = _accounts(self, settings, secret, clock)
        self.store_target = store.url
        """What a child process opens to reach the same store (the usage writer): the
        SQLite file, or the full PostgreSQL URL (with its password: never log it)."""
        # One key table per process, shared by every edge it serves (/v1, /api).
        self.auth = KeyAuthenticator(self.new_table(), self, limiter.generation, shared=self.remote)
        self._follower: asyncio.Task[None] | None = None
        # The files this process opened (path → device and inode), to tell at
        # readiness whether they are still the ones at those paths.
        self._store_files = set(store.files())
        paths = [*store.files()] + ([Path(limiter.path)] if limiter.path is not None else [])
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
            store = await open_store(settings)
        except (sqlite3.Error, OSError) as exc:
            raise state_error(exc, data_dir) from exc
        try:
            limits = await open_limits(settings, limiter, clock)
        except BaseException:
            await store.close()
            raise
        try:
            core = cls(
                data_dir, store, limiter, Digester(secret), clock, settings=settings, secret=secret, limits=limits
            )
        except LimiterError as exc:
            await limits.aclose()
            await store.close()
            raise StateError(
                f"{exc}. The sign-in throttle's region ({data_dir / THROTTLE_FILE}) is rebuilt when it is missing: "
                "stop every AgentRouter process using the data directory, remove it, and start again; or set "
                "accounts.throttle_buckets to the value the server uses."
            ) from exc
        if settings.store_url is not None and settings.store_backend == "postgresql":
            core.store_target = settings.store_url
        try:
            await core._sync_slots()
        except BaseException:
            await core.close()
            raise
        return core

    def follow_changes(self) -> None:
        """Start reloading the key table when the shared generation moves (Redis only;
        a no-op otherwise). Stopped by ``close``."""
        if self.remote is not None and self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(
                self.auth.follow(self.remote.changes()), name="agentrouter-key-changes"
            )

    async def close(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        try:
            await self.accounts.aclose()
            await self.limits.aclose()
        finally:
            await self.store.close()

    def limiter_state(self) -> str | None:
        """With Redis, what decides now: ``redis``, or ``redis unavailable: <mode>``
        (None in shared-memory mode)."""
        if self.remote is None:
            return None
        return "redis" if self.remote.available else f"redis unavailable: {self.remote.mode.value}"

    async def problems(self) -> list[str]:
        """Why this process cannot serve keys right now (empty: ready). Cheap: a few
        ``stat`` calls and one trivial query. The details are logged; the reasons
        returned name the part only (they reach unauthenticated callers)."""
        problems: list[str] = []
        if not self.auth.loaded:
            problems.append("key table: not loaded yet")
        for path, identity in self._opened.items():
            part = "store" if path in self._store_files else "limiter"
            now = _identity(path)
            if now != identity:
                log.warning("not ready: %s was removed or replaced since this process opened it", path)
                problems.append(f"{part}: its file was removed or replaced; restart the server")
            elif not os.access(path, os.R_OK | os.W_OK):
                log.warning("not ready: %s is not readable and writable", path)
                problems.append(f"{part}: its file is not readable and writable")
        if self.remote is not None:
            # A probe: ends an outage when Redis is back. Logged by the limiter (once per
            # outage); only "closed" stops serving (the other modes keep answering).
            up = await self.remote.check()
            if not up and self.remote.mode is FailureMode.CLOSED:
                problems.append("limiter: Redis is unavailable and limiter_failure_mode is closed")
        try:
            await asyncio.wait_for(self.store.schema_version(), READY_QUERY_TIMEOUT)
        except TimeoutError:
            problems.append(f"store: no answer within {READY_QUERY_TIMEOUT:g} s")
        except StoreUnavailable as exc:
            log.warning("not ready: %s", exc)
            problems.append("store: the database is unavailable")
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
        rows = await self.store.active_keys_with_digests()
        if self.remote is not None:
            # Keys made on other hosts hold slots this host's region has not given them
            # yet: the table's local checks (and the local failure mode) need them live.
            for _digest, row in rows:
                if row.slot is not None and not self.limiter.slot_is_live(row.slot, row.tag):
                    self.limiter.claim_slot(row.slot, row.tag)
        entries = [(digest, key_record(row)) for digest, row in rows]
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


async def open_limits(settings: Settings, region: RateLimiter, clock: FakeClock | None = None) -> Limiter:
    """The limiter of ``settings``: the shared-memory region alone, or Redis with the
    region as its fallback (see the module docstring)."""
    local = SharedMemoryLimiter(region)
    url = settings.limiter_url
    if url is None:
        return local
    from agentrouter.limits.redis import RedisLimiter  # redis-py: imported only when used

    test_clock = None if clock is None else (lambda: round(clock.unix * 1e9))
    remote = await RedisLimiter.connect(url, timeout=settings.limiter_timeout, test_clock=test_clock, lazy=True)
    limits = FailoverLimiter(remote, local, FailureMode(settings.limiter_failure_mode))
    # Redis down now is no reason not to start: the outage is logged (once) and the
    # failure mode decides until Redis answers.
    await limits.check()
    return limits


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
