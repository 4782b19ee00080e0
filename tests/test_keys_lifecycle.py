"""A state-machine test of the key lifecycle: create, update, rotate, delete,
authenticate — against a model of what a user of the product document expects."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from agentrouter._core import (
    AUTH_EXPIRED,
    AUTH_OK,
    AUTH_REVOKED,
    AUTH_STALE,
    AUTH_UNKNOWN,
    FakeClock,
    KeyTable,
    generate_key,
)
from agentrouter.core import Core
from agentrouter.keys import KeyConflict, KeyNotFound
from tests.conftest import SECRET, open_core


@dataclass
class ModelKey:
    id: str
    deleted: bool = False
    expires_at: float | None = None
    requests: int | None = None
    rotated: bool = False


@dataclass
class Model:
    keys: dict[str, ModelKey] = field(default_factory=dict)  # raw key -> model
    now: float = 0.0

    def expected(self, raw: str) -> str:
        k = self.keys.get(raw)
        if k is None:
            return "unknown"
        if k.deleted:
            return "deleted"
        if k.expires_at is not None and k.expires_at <= self.now:
            return "expired"
        return "ok"


async def gateway_auth(core: Core, table: KeyTable, raw: str) -> int:
    """What a gateway worker does: reload once when the shared generation moved."""
    if table.generation != core.limiter.generation():
        await core.load_table(table)
    code, _record = table.authenticate(raw)
    if code == AUTH_STALE:
        await core.load_table(table)
        code, _record = table.authenticate(raw)
    return code


class KeyLifecycle(RuleBasedStateMachine):
    raws = Bundle("raws")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="agentrouter-sm-"))
        self.clock = FakeClock()
        self.core = self.loop.run_until_complete(open_core(self.dir, secret=SECRET, clock=self.clock))
        # A table loaded once and kept, like a long-running worker's.
        self.table = self.core.new_table()
        self.loop.run_until_complete(self.core.load_table(self.table))
        self.model = Model(now=self.clock.unix)

    def teardown(self) -> None:
        self.loop.run_until_complete(self.core.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @rule(target=raws, requests=st.none() | st.integers(1, 1000))
    def create(self, requests: int | None) -> str:
        created = self.run(self.core.keys.create(requests=requests))
        assert created.key.startswith("sk-ar-") and len(created.key) == 44
        assert created.row.prefix == created.key[:12] + "…"
        self.model.keys[created.key] = ModelKey(created.row.id, requests=requests)
        return created.key

    @rule(target=raws, raw=raws, grace=st.sampled_from([0.0, 1.0, 30.0]))
    def rotate(self, raw: str, grace: float) -> str:
        old = self.model.keys.get(raw)
        if old is None:
            return raw
        expected = self.model.expected(raw)
        if expected == "deleted":
            with pytest.raises(KeyNotFound):
                self.run(self.core.keys.rotate(old.id, grace=grace))
            return generate_key()  # a well-formed key nobody has
        if expected == "expired" or old.rotated:
            with pytest.raises(KeyConflict):
                self.run(self.core.keys.rotate(old.id, grace=grace))
            return generate_key()
        created = self.run(self.core.keys.rotate(old.id, grace=grace))
        old.rotated = True
        until = self.model.now + grace
        old.expires_at = until if old.expires_at is None else min(old.expires_at, until)
        assert created.row.requests == old.requests
        self.model.keys[created.key] = ModelKey(created.row.id, requests=old.requests)
        return created.key

    @rule(raw=raws)
    def delete(self, raw: str) -> None:
        k = self.model.keys.get(raw)
        if k is None:
            return
        if k.deleted:
            with pytest.raises(KeyNotFound):
                self.run(self.core.keys.delete(k.id))
            return
        self.run(self.core.keys.delete(k.id))
        k.deleted = True

    @rule(raw=raws, requests=st.integers(1, 50))
    def update_limit(self, raw: str, requests: int) -> None:
        k = self.model.keys.get(raw)
        if k is None or k.deleted:
            return
        row = self.run(self.core.keys.update(k.id, requests=requests))
        assert row.requests == requests
        k.requests = requests

    @rule(seconds=st.sampled_from([0.5, 1.0, 10.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.clock.unix

    @rule(raw=raws)
    def authenticate(self, raw: str) -> None:
        code = self.run(gateway_auth(self.core, self.table, raw))
        expected = self.model.expected(raw)
        allowed = {
            "ok": {AUTH_OK},
            "expired": {AUTH_EXPIRED},
            # A worker that still holds the record sees the revoked flag; after a
            # reload, the deleted key's tombstone: deleted either way, never unknown.
            "deleted": {AUTH_REVOKED},
            "unknown": {AUTH_UNKNOWN},
        }[expected]
        assert code in allowed, (raw[:12], expected, code)

    @precondition(lambda self: len(self.model.keys) > 0)
    @invariant()
    def a_fresh_process_agrees(self) -> None:
        # A process started now (new table) agrees with the model on every key.
        table = self.core.new_table()
        self.run(self.core.load_table(table))
        for raw in self.model.keys:
            code, record = table.authenticate(raw)
            expected = self.model.expected(raw)
            want = {"ok": AUTH_OK, "expired": AUTH_EXPIRED, "deleted": AUTH_REVOKED}[expected]
            assert code == want, (raw[:12], expected, code)
            if code == AUTH_OK:
                assert record is not None and record.requests == self.model.keys[raw].requests


KeyLifecycle.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestKeyLifecycle = KeyLifecycle.TestCase
