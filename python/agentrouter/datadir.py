"""Where AgentRouter keeps its state on one host."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DB_FILE = "agentrouter.db"
LIMITER_FILE = "limiter.shm"
SECRET_FILE = "secret"


def default_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_DATA_HOME/agentrouter``, else ``~/.local/share/agentrouter``: the data
    directory when the settings name none (``Settings.data_dir``, which
    ``AGENTROUTER_DATA_DIR`` and ``--data-dir`` set)."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "agentrouter"


def ensure_data_dir(path: Path) -> Path:
    """Create the directory (private to this user) if it does not exist yet."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
