"""Opening the core the way the server would: the same data directory."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from agentrouter.cli.output import CommandError, UsageError
from agentrouter.config import ConfigError, load_settings
from agentrouter.core import Core
from agentrouter.datadir import default_data_dir
from agentrouter.keys import KeyConflict, KeyInputError, KeyNotFound
from agentrouter.secret import SecretError
from agentrouter.store import StoreError

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


def data_dir_for(args: argparse.Namespace) -> Path:
    """--data-dir, else the configuration's data_dir, else the environment's default."""
    if getattr(args, "global_data_dir", None):
        return Path(args.global_data_dir).expanduser()
    config = getattr(args, "global_config", None) or os.environ.get("AGENTROUTER_CONFIG")
    if config:
        try:
            settings = load_settings(config)
        except ConfigError as exc:
            raise UsageError(f"configuration: {exc}") from None
        if settings.data_dir:
            return Path(settings.data_dir).expanduser()
    return default_data_dir()


def run_with_core(args: argparse.Namespace, op: Callable[[Core], Awaitable[T]]) -> T:
    """Open the core, run ``op``, close it; map domain errors to exit statuses."""

    async def main() -> T:
        core = await Core.open(data_dir_for(args))
        try:
            return await op(core)
        finally:
            await core.close()

    try:
        return asyncio.run(main())
    except KeyInputError as exc:
        raise UsageError(str(exc)) from None
    except (KeyNotFound, KeyConflict, StoreError, SecretError) as exc:
        raise CommandError(str(exc.args[0] if exc.args else exc)) from None
