"""What every command shares: errors with exit statuses, JSON or human output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from agentrouter.errors import AgentRouterError


class UsageError(AgentRouterError):
    """Bad input from the caller: exit status 2, nothing written."""


class CommandError(AgentRouterError):
    """The command could not do its job (unknown id, …): exit status 1."""


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def emit_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def fail(args: argparse.Namespace, message: str, *, status: int) -> int:
    if wants_json(args):
        emit_json({"error": message})
    else:
        print(f"agentrouter: error: {message}", file=sys.stderr)
    return status


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
