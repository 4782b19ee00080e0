"""The ``agentrouter`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``func``; ``func(args)`` returns the exit status.
Exit status: 0 on success, 2 on usage errors (argparse and ``UsageError``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agentrouter.cli.context import add_global_options
from agentrouter.cli.output import CommandError, UsageError, fail

# Sub-command modules, in the order `--help` lists them.
_COMMANDS = ("serve", "keys", "usage", "alerts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentrouter", description="AgentRouter LLM API gateway")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"agentrouter.cli.{name}")
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
    except UsageError as exc:
        return fail(args, str(exc), status=2)
    except CommandError as exc:
        return fail(args, str(exc), status=1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # python -m agentrouter.cli
    sys.exit(main())
