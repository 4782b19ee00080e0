"""The server secret: the HMAC key under which API keys are digested.

Given by the settings (``Settings.secret``, from ``AGENTROUTER_SECRET``; checked to be
at least 32 bytes there) or created on first run as 32 random bytes in
``<data dir>/secret`` with mode 0600. Losing it invalidates every key, so it is never
rewritten once it exists.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from agentrouter.config import MIN_SECRET_BYTES
from agentrouter.datadir import SECRET_FILE
from agentrouter.errors import AgentRouterError

__all__ = ["MIN_SECRET_BYTES", "SecretError", "load_secret"]


class SecretError(AgentRouterError):
    """The secret is missing, too short or readable by others."""


def load_secret(data_dir: Path, given: bytes | None = None) -> bytes:
    """``given`` (the settings' secret), else the data directory's file, created if missing."""
    if given is not None:
        if len(given) < MIN_SECRET_BYTES:
            raise SecretError(f"the server secret must be at least {MIN_SECRET_BYTES} bytes long")
        return given
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path} is readable by other users; run: chmod 600 {path}")
    raw = path.read_bytes()
    if len(raw) < MIN_SECRET_BYTES:
        raise SecretError(f"{path} holds fewer than {MIN_SECRET_BYTES} bytes; restore it from a backup")
    return raw


def _create(path: Path) -> None:
    # Write a private temp file, then hard-link it into place: the link fails if
    # another process won the race, so nobody ever reads a half-written secret.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(MIN_SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
