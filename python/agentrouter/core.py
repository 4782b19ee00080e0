"""Opens everything a process needs to serve or manage keys on one host.

Used by the gateway workers, the CLI and the tests alike, so there is one way to
put the store, the shared limiter region and the digester together.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from agentrouter._core import Digester, FakeClock, KeyRecord, KeyTable, RateLimiter
from agentrouter.datadir import DB_FILE, LIMITER_FILE, default_data_dir, ensure_data_dir
from agentrouter.keys import KeyService
from agentrouter.secret import load_secret
from agentrouter.store import KeyRow, Store

DEFAULT_LIMITER_SLOTS = 65536


class Core:
    def __init__(
        self,
        data_dir: Path,
        store: Store,
        limiter: RateLimiter,
        digester: Digester,
        clock: FakeClock | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.limiter = limiter
        self.digester = digester
        # Expiry is judged by the limiter's clock in the key table, so key
        # operations must read the same clock.
        self.now: Callable[[], float] = time.time if clock is None else (lambda: clock.unix)
        self.keys = KeyService(store, limiter, digester, clock=self.now)

    @classmethod
    async def open(
        cls,
        data_dir: Path | None = None,
        *,
        env: Mapping[str, str] = os.environ,
        clock: FakeClock | None = None,
    ) -> Core:
        data_dir = ensure_data_dir(data_dir or default_data_dir(env))
        secret = load_secret(data_dir, env)
        slots = int(env.get("AGENTROUTER_LIMITER_SLOTS", DEFAULT_LIMITER_SLOTS))
        limiter = RateLimiter(data_dir / LIMITER_FILE, capacity=slots, clock=clock)
        store = await Store.open(data_dir / DB_FILE)
        core = cls(data_dir, store, limiter, Digester(secret), clock)
        try:
            await core._sync_slots()
        except BaseException:
            await store.close()
            raise
        return core

    async def close(self) -> None:
        await self.store.close()

    async def _sync_slots(self) -> None:
        """Make the shared region agree with the store. Normally a no-op; after the
        region file was lost or recreated it gives each active key its slot back."""
        for _digest, row in await self.store.active_keys_with_digests():
            if row.slot is not None and not self.limiter.slot_is_live(row.slot, row.tag):
                self.limiter.claim_slot(row.slot, row.tag)

    def new_table(self) -> KeyTable:
        return KeyTable(self.digester, self.limiter)

    async def load_table(self, table: KeyTable) -> None:
        """Rebuild ``table`` from the store. The generation is read first, so a change
        that lands during the read moves it again and causes one more reload."""
        generation = self.limiter.generation()
        entries = [(digest, key_record(row)) for digest, row in await self.store.active_keys_with_digests()]
        table.replace_all(entries, generation)


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
