"""The ``agentrouter`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``func``; ``func(args)`` returns the exit status.

Exit status: 0 on success; 2 on bad input (argparse, ``UsageError``, ``KeyInputError``,
``ConfigError``, ``AccountInputError`` such as a weak password: the message says what
to fix, nothing was written); 1 otherwise. Every
error of the project (``AgentRouterError``: an unknown id, a locked or damaged
database, an unusable data directory or limiter region, …) is turned into a one-line
message here, in ``main``, and never into a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agentrouter.accounts.errors import AccountInputError
from agentrouter.cli.context import add_global_options
from agentrouter.cli.output import UsageError, fail
from agentrouter.config import ConfigError
from agentrouter.errors import AgentRouterError
from agentrouter.keys import KeyInputError

# Sub-command modules, in the order `--help` lists them.
_COMMANDS = ("serve", "migrate", "keys", "users", "usage", "alerts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentrouter", description="AgentRouter LLM API gateway")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"agentrouter.cli.{name}")  # users.py registers invites too
        except ModuleNotFoundError as exc:
            if exc.name != f"agentrouter.cli.{name}":
                raise
            continue  # a command not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AgentRouterError as exc:
        return fail(args, _message(exc), status=2 if isinstance(exc, _BAD_INPUT) else 1)
    except KeyboardInterrupt:
        return 130


_BAD_INPUT = (UsageError, KeyInputError, ConfigError, AccountInputError)


def _message(exc: AgentRouterError) -> str:
    if isinstance(exc, ConfigError):
        return f"bad configuration: {exc}"
    return str(exc)


if __name__ == "__main__":  # python -m agentrouter.cli
    sys.exit(main())
