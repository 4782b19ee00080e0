"""Passwords: the policy, and Argon2id hashing off the event loop.

Policy (``check_password``): at least 8 characters with an uppercase letter, a
lowercase letter and a digit (the product document's rule); at most
``MAX_PASSWORD`` characters (1024: passphrases fit, a megabyte does not reach the
hash); never truncated, trimmed or normalised — the password hashed is the one
typed. Beyond the rule, zxcvbn estimates how guessable it is, given the person's
own words (the email's name and domain, the display name); a score below 3 is
refused with zxcvbn's own warning and suggestions as the message. zxcvbn looks at
the first 72 characters (its own bound, which keeps the estimate to milliseconds):
a password whose first 72 characters are strong is strong.

Hashing (``PasswordHasher``): argon2-cffi's Argon2id at or above its defaults (the
settings refuse less). Each hash or verification takes about 100 ms of CPU, so it
runs in a small thread pool (argon2's C code releases the GIL): a burst of sign-ins
queues there and never stalls the event loop that serves ``/v1`` on the same
worker. The pool's threads run at a lower CPU priority (``HASH_NICENESS``; on Linux
a thread's nice value is its own, and argon2's lane threads inherit it): on a busy
host the scheduler gives the event loop its turn first, so ``/v1`` latency is not
traded for sign-in throughput. At most ``MAX_QUEUED`` wait per process; beyond that the caller gets
``Busy`` (503) rather than an ever longer queue. ``verify`` says whether the hash
should be redone (the parameters rose since it was made): the service then
rehashes the password it just verified.

``verify_dummy`` spends the same work on a fixed hash, for sign-ins of unknown
addresses or accounts without a password: the answer takes as long either way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn  # type: ignore[import-untyped]

from agentrouter.accounts.errors import Busy, WeakPassword

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "MIN_SCORE", "PasswordHasher", "check_password", "user_words"]

MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 1024
MIN_SCORE: Final = 3
"""zxcvbn's scale: 0 too guessable, 1 very, 2 somewhat, 3 safely unguessable, 4 very unguessable."""
ZXCVBN_MAX: Final = 72
MAX_QUEUED: Final = 256
T = TypeVar("T")


def check_password(password: object, *, user_inputs: Sequence[str] = ()) -> str:
    """``password`` when it meets the policy (see the module docstring), else
    ``WeakPassword`` saying what is wrong."""
    if not isinstance(password, str):
        raise WeakPassword("password must be text", field="password")
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD} characters long", field="password")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD} characters long", field="password")
    missing = [
        what
        for what, test in (
            ("an uppercase letter", any(c.isupper() for c in password)),
            ("a lowercase letter", any(c.islower() for c in password)),
            ("a digit", any(c.isdigit() for c in password)),
        )
        if not test
    ]
    if missing:
        raise WeakPassword(
            "password must contain an uppercase letter, a lowercase letter and a digit; it has no "
            + " and no ".join(m.split(" ", 1)[1] for m in missing),
            field="password",
        )
    words = [w for w in user_inputs if w]
    result = zxcvbn(password[:ZXCVBN_MAX], user_inputs=words)
    if result["score"] < MIN_SCORE:
        feedback = result.get("feedback") or {}
        warning = (feedback.get("warning") or "").strip()
        suggestions = [s.strip() for s in feedback.get("suggestions") or [] if s.strip()]
        why = warning or "It would be guessed quickly."
        if not why.endswith("."):
            why += "."
        if _contains_own_words(password, words) and "name" not in why.lower():
            why = "It contains your own name or email address. " + why
        advice = " ".join(s if s.endswith(".") else s + "." for s in suggestions)
        raise WeakPassword(f"password is too easy to guess: {why}" + (f" {advice}" if advice else ""), field="password")
    return password


def user_words(email: str, display_name: str | None = None) -> list[str]:
    """The person's own words zxcvbn should treat as guessable: the address, its local
    part and its parts (``alice.smith`` → ``alice``, ``smith``), the domain's labels,
    the display name and its words."""
    local, _, domain = email.partition("@")
    words = [email, local, *re.split(r"[._+\-]+", local), domain, *domain.split(".")]
    if display_name:
        words += [display_name, *display_name.split()]
    return list(dict.fromkeys(w.lower() for w in words if len(w) >= 3))


def _contains_own_words(password: str, words: Sequence[str]) -> bool:
    lower = password.lower()
    return any(len(w) >= 4 and w in lower for w in words)


HASH_NICENESS: Final = 10
"""How much lower the hashing threads' CPU priority is than the event loop's."""

log = logging.getLogger("agentrouter.accounts")


def _lower_priority() -> None:
    """Thread initializer of the hashing pool: this thread (only) yields the CPU to
    the event loop. Where threads cannot be given their own priority, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + HASH_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux, or refused: hashing still works
        log.debug("hashing threads keep the process's priority: %s", exc)


class PasswordHasher:
    """Argon2id in a bounded thread pool (see the module docstring)."""

    def __init__(
        self,
        *,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_cost: int = argon2.DEFAULT_MEMORY_COST,
        parallelism: int = argon2.DEFAULT_PARALLELISM,
        threads: int = 1,
    ) -> None:
        if (
            time_cost < argon2.DEFAULT_TIME_COST
            or memory_cost < argon2.DEFAULT_MEMORY_COST
            or parallelism < argon2.DEFAULT_PARALLELISM
        ):
            raise ValueError("Argon2id parameters must be at or above argon2-cffi's defaults")
        self._ph = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2", initializer=_lower_priority)
        self._queued = 0
        self._dummy: str | None = None

    @property
    def parameters(self) -> tuple[int, int, int]:
        """(time cost, memory in KiB, parallelism) of new hashes."""
        return self._ph.time_cost, self._ph.memory_cost, self._ph.parallelism

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._queued >= MAX_QUEUED:
            raise Busy("too many sign-ins are being checked at once; try again in a moment")
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        finally:
            self._queued -= 1

    async def hash(self, password: str) -> str:
        """A new Argon2id hash (PHC string: parameters and salt included)."""
        return await self._run(functools.partial(self._ph.hash, password))

    async def verify(self, stored: str, password: str) -> tuple[bool, bool]:
        """(whether ``password`` matches ``stored``, whether ``stored`` should be
        rehashed with the current parameters). A damaged hash never matches."""
        ok = await self._run(functools.partial(self._check, stored, password))
        if not ok:
            return False, False
        return True, self._ph.check_needs_rehash(stored)

    async def verify_dummy(self, password: str) -> None:
        """The work of a verification, on a hash of nothing: for unknown addresses."""
        if self._dummy is None:
            self._dummy = await self.hash("not a password: the hash of unknown accounts")
        await self._run(functools.partial(self._check, self._dummy, password))

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._ph.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
