"""POST each new alert as JSON to the configured webhook, with retries and a timeout.

Off the hot path (the monitor's task), so httpx is the client. A POST counts as
delivered on any 2xx answer. Connection errors, timeouts, 408, 429 and 5xx are
retried ``retries`` times with exponential backoff (``backoff`` · 2ⁿ seconds, at most
30 s, or the ``Retry-After`` the receiver asked for when that is shorter than a
minute); any other answer is final. An alert that was not delivered is tried again
on later monitor runs (``Settings.alert_webhook_rounds``).

The document sent::

    {"type": "agentrouter.alert",
     "alert": {"id", "key_id", "kind", "subject", "evidence", "created_at", "acknowledged_at"},
     "key": {"id", "name", "prefix"} | null}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import httpx
import msgspec

from agentrouter.store.models import AlertKind, AlertRow, KeyRow

log = logging.getLogger("agentrouter.monitor.webhook")

MAX_BACKOFF = 30.0
RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookKey(msgspec.Struct, kw_only=True):
    id: str
    name: str | None
    prefix: str


class WebhookAlert(msgspec.Struct, kw_only=True):
    id: str
    key_id: str
    kind: AlertKind
    subject: str
    evidence: dict[str, Any]
    created_at: float
    acknowledged_at: float | None


class WebhookEvent(msgspec.Struct, kw_only=True):
    type: Literal["agentrouter.alert"] = "agentrouter.alert"
    alert: WebhookAlert
    key: WebhookKey | None


def alert_event(alert: AlertRow, key: KeyRow | None) -> WebhookEvent:
    return WebhookEvent(
        alert=WebhookAlert(
            id=alert.id,
            key_id=alert.key_id,
            kind=alert.kind,
            subject=alert.subject,
            evidence=alert.evidence,
            created_at=alert.created_at,
            acknowledged_at=alert.acknowledged_at,
        ),
        key=None if key is None else WebhookKey(id=key.id, name=key.name, prefix=key.prefix),
    )


class WebhookSender:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers={"user-agent": "agentrouter-monitor"},
            follow_redirects=False,
        )
        self._sleep = sleep

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def send(self, event: WebhookEvent) -> bool:
        """POST ``event``; True once the receiver answered 2xx, False when it never did."""
        body = msgspec.json.encode(event)
        headers = {"content-type": "application/json"}
        for attempt in range(self.retries + 1):
            delay = self.backoff * (2**attempt)
            try:
                resp = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("alert webhook: attempt %d failed: %s", attempt + 1, type(exc).__name__)
            else:
                if 200 <= resp.status_code < 300:
                    return True
                if resp.status_code not in RETRY_STATUSES and resp.status_code < 500:
                    log.warning("alert webhook: answered %d; not retrying", resp.status_code)
                    return False
                log.warning("alert webhook: attempt %d answered %d", attempt + 1, resp.status_code)
                asked = _retry_after(resp.headers.get("retry-after"))
                if asked is not None:
                    delay = asked
            if attempt < self.retries:
                await self._sleep(min(delay, MAX_BACKOFF))
        return False


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 60 else None
