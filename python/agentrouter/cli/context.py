"""Opening the core the way the server would: the same settings, the same data directory."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agentrouter.config import Settings, load_settings
from agentrouter.core import Core, state_error

T = TypeVar("T")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    # Own dest names: a sub-command's parser would overwrite same-named defaults.
    parser.add_argument(
        "--data-dir",
        dest="global_data_dir",
        metavar="DIR",
        help="the data directory (default: the config's, else AGENTROUTER_DATA_DIR, else ~/.local/share/agentrouter)",
    )
    parser.add_argument(
        "--config",
        dest="global_config",
        metavar="FILE",
        help="the server's TOML configuration (default: AGENTROUTER_CONFIG)",
    )


def settings_for(args: argparse.Namespace, *, config: str | None = None, **overrides: object) -> Settings:
    """The settings the server would use: ``config`` or the global ``--config`` (else
    ``AGENTROUTER_CONFIG``), the ``AGENTROUTER_*`` variables, then the global
    ``--data-dir`` and ``overrides`` (flags by field name). A bad setting raises
    ``ConfigError`` (exit status 2)."""
    return load_settings(
        config or getattr(args, "global_config", None),
        overrides={"data_dir": getattr(args, "global_data_dir", None), **overrides},
    )


def run_with_core(args: argparse.Namespace, op: Callable[[Core], Awaitable[T]]) -> T:
    """Open the core on the server's settings, run ``op``, close it. A database failure
    during ``op`` (locked, read-only, damaged) becomes a ``StateError`` saying what to do;
    ``agentrouter.cli.main`` turns every project error into a message and an exit status."""

    async def main() -> T:
        core = await Core.from_settings(settings_for(args))
        try:
            return await op(core)
        except sqlite3.Error as exc:
            raise state_error(exc, core.data_dir) from exc
        finally:
            await core.close()

    return asyncio.run(main())
