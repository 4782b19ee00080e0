"""The monitor's periodic task: prune the request log (hourly), run the detectors,
store alerts, deliver them to the webhook.

One tracked task per process, started and stopped by the app's lifespan. In a
multi-worker server every worker starts one, but only the holder of the ``monitor``
lease (a row in SQLite with an expiry, renewed each run) does the work; when that
process stops it releases the lease, and if it dies the lease expires after three
intervals and another worker takes over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

import msgspec

from agentrouter.config import Settings
from agentrouter.monitor.detectors import KeyHistory, detect
from agentrouter.monitor.settings import DAY, HOUR
from agentrouter.monitor.webhook import WebhookSender, alert_event
from agentrouter.store import Store
from agentrouter.store.models import AlertRow

log = logging.getLogger("agentrouter.monitor")

LEASE = "monitor"
PRUNE_EVERY = HOUR
STOP_TIMEOUT = 5.0


class RunResult(msgspec.Struct, kw_only=True):
    """What one run did (for logs and tests)."""

    leader: bool
    keys_checked: int = 0
    alerts: list[AlertRow] = msgspec.field(default_factory=list)
    pruned: int = 0
    notified: int = 0
    notify_failed: int = 0


class Monitor:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        sender: WebhookSender | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._sender = sender
        if sender is None and settings.alert_webhook_url:
            self._sender = WebhookSender(
                settings.alert_webhook_url,
                timeout=settings.alert_webhook_timeout,
                retries=settings.alert_webhook_retries,
                backoff=settings.alert_webhook_backoff,
            )
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._last_prune: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.runs = 0
        """Runs this process did as the lease holder."""
        self.leader = False
        """Whether this process held the lease at its last run."""

    @property
    def lease_ttl(self) -> float:
        return max(3 * self.settings.monitor_interval, 30.0)

    # -- the task ------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic task on the running loop (once). With the detectors
        disabled (``monitor_enabled = false``) it still prunes the request log."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="agentrouter-monitor")

    async def stop(self) -> None:
        """Stop the task (let a run in progress finish for a moment, then cancel it),
        release the lease and close the webhook client."""
        task, self._task = self._task, None
        self._stop.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
            except TimeoutError:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            try:
                await self.store.release_lease(LEASE, self.holder)
            except Exception:  # the store may already be closing; the lease expires anyway
                log.warning("could not release the monitor lease", exc_info=True)
        if self._sender is not None:
            await self._sender.aclose()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("monitor run failed; trying again in %.0f s", self.settings.monitor_interval)
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.monitor_interval)
            except TimeoutError:
                pass

    # -- one run -------------------------------------------------------------

    async def run_once(self) -> RunResult:
        now = self._clock()
        leader = await self.store.take_lease(LEASE, self.holder, now=now, ttl=self.lease_ttl)
        if leader != self.leader:
            self.leader = leader
            if leader:
                log.info("monitor: this process (%s) holds the %r lease and runs the monitor", self.holder, LEASE)
            else:
                log.info("monitor: the %r lease went to another process", LEASE)
        if not leader:
            return RunResult(leader=False)
        self.runs += 1
        result = RunResult(leader=True)
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            result.pruned = await self.prune(now)
            self._last_prune = now
        if not self.settings.monitor_enabled:
            return result
        result.keys_checked, result.alerts = await self.detect(now)
        if self._sender is not None:
            result.notified, result.notify_failed = await self.notify(now)
        if result.alerts:
            log.warning(
                "monitor: %d new alert(s): %s",
                len(result.alerts),
                ", ".join(f"{a.kind} on {a.key_id}" for a in result.alerts),
            )
        return result

    async def prune(self, now: float) -> int:
        """Delete request-log rows past their retention (returns how many), and the
        expired sessions and one-time tokens of the accounts."""
        s = self.settings
        await self.store.accounts.prune(now)
        return await self.store.prune(
            log_before=now - s.request_log_retention_days * DAY,
            rollups_before=now - max(s.rollup_retention_days, s.request_log_retention_days) * DAY,
        )

    async def detect(self, now: float) -> tuple[int, list[AlertRow]]:
        config = self.settings.monitor
        recent = now - max(2 * HOUR, config.new_ip_lookback_hours * HOUR)
        key_ids = await self.store.keys_used_since(recent)
        if not key_ids:
            return 0, []
        hours = await self.store.hourly(key_ids, now - config.history_days * DAY)
        ips = await self.store.client_ips(key_ids)
        created: list[AlertRow] = []
        for key_id in key_ids:
            history = KeyHistory(key_id=key_id, hours=hours[key_id], ips=ips[key_id])
            for finding in detect(history, now, config):
                alert = await self.store.record_alert(
                    key_id=key_id,
                    kind=finding.kind,
                    subject=finding.subject,
                    evidence=finding.evidence,
                    now=now,
                    cooldown=config.cooldown(finding.kind),
                )
                if alert is not None:
                    created.append(alert)
        return len(key_ids), created

    async def notify(self, now: float) -> tuple[int, int]:
        """Deliver undelivered alerts of the last day; (delivered, failed)."""
        assert self._sender is not None
        pending = await self.store.alerts_to_notify(
            created_after=now - DAY, max_attempts=self.settings.alert_webhook_rounds
        )
        delivered = failed = 0
        for alert in pending:
            key = await self.store.get_key(alert.key_id)
            ok = await self._sender.send(alert_event(alert, key))
            await self.store.note_notification(alert.id, delivered_at=self._clock() if ok else None)
            if ok:
                delivered += 1
            else:
                failed += 1
        return delivered, failed
