"""Sign-in throttling on the project's own limiter.

Two GCRA quotas, checked before any password work: per account (the case-folded
address, known or not: an unknown address is throttled like a known one, so the
answer tells nothing) and per client IP. A refused attempt raises ``Throttled``
with the wait and costs no Argon2 work. Registrations and password-reset requests
have a per-client-IP quota of their own (``check_registration``), checked before
the strength estimate and the hash a registration costs.

The buckets live in a limiter region of their own (``<data dir>/signin.shm``),
shared by every process of the server like the keys' buckets, in its slot form:
a name is placed on one of ``throttle_buckets`` slots per kind by a hash keyed
with the server secret. The region never fills up (names are not stored), and
since the hash is keyed nobody can pick addresses that land on someone else's
bucket; two names sharing a slot by chance (more names than buckets) share a
quota, which errs on the side of refusing.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Final

from agentrouter._core import FakeClock, RateLimiter
from agentrouter.accounts.errors import Throttled
from agentrouter.accounts.tokens import derive_key
from agentrouter.config import AccountsSettings

__all__ = ["THROTTLE_FILE", "SignInThrottle"]

THROTTLE_FILE: Final = "signin.shm"


class SignInThrottle:
    def __init__(
        self, path: Path | None, settings: AccountsSettings, secret: bytes, *, clock: FakeClock | None = None
    ) -> None:
        self._buckets = settings.throttle_buckets
        self._limiter = RateLimiter(path, capacity=2 * self._buckets, clock=clock)
        self._key = derive_key(secret, "sign-in throttle v1")
        self._account = (settings.signin_account_attempts, settings.signin_account_interval)
        self._ip = (settings.signin_ip_attempts, settings.signin_ip_interval)
        self._register = (settings.register_ip_attempts, settings.register_ip_interval)

    def _slot(self, kind: int, name: str) -> int:
        h = hmac.new(self._key, name.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        return kind * self._buckets + int.from_bytes(h[:8], "big") % self._buckets

    def check_registration(self, client_ip: str | None) -> None:
        """Count one registration or password-reset request for ``client_ip``
        (``register_ip_attempts`` per ``register_ip_interval``); ``Throttled`` when over.
        Its buckets are the client IPs' slots under another name."""
        if not client_ip:
            return
        requests, interval = self._register
        d = self._limiter.acquire_slot(self._slot(1, "register:" + client_ip), requests, interval)
        if not d.allowed:
            raise Throttled(
                "too many registrations or password-reset requests from this address; try again later",
                retry_after=d.retry_after or interval,
            )

    def check(self, *, account: str | None, client_ip: str | None) -> None:
        """Count one attempt for ``client_ip`` and for ``account`` (a case-folded
        address, or another account key); ``Throttled`` when either is over its quota.
        The address is checked first, so a flood from one address does not use up
        the victim account's quota."""
        if client_ip:
            d = self._limiter.acquire_slot(self._slot(1, client_ip), self._ip[0], self._ip[1])
            if not d.allowed:
                raise Throttled(
                    "too many sign-in attempts from this address; try again later",
                    retry_after=d.retry_after or self._ip[1],
                )
        if account:
            d = self._limiter.acquire_slot(self._slot(0, account), self._account[0], self._account[1])
            if not d.allowed:
                raise Throttled(
                    "too many sign-in attempts for this account; try again later",
                    retry_after=d.retry_after or self._account[1],
                )
