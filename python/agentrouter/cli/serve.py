"""``agentrouter serve``: run the gateway (Granian, N workers) until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agentrouter.cli.output import CommandError, UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the gateway",
        description=(
            "Run the OpenAI- and Anthropic-compatible gateway. Settings come from the "
            "configuration file (--config or AGENTROUTER_CONFIG), then AGENTROUTER_* "
            "variables, then these flags. With no provider configured, the built-in mock "
            "provider serves its models offline."
        ),
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; AGENTROUTER_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080; AGENTROUTER_PORT)")
    p.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: the CPU count; AGENTROUTER_WORKERS)"
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (AGENTROUTER_CONFIG)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from agentrouter.config import ConfigError, load_settings

    try:
        settings = load_settings(
            args.config,
            overrides={"host": args.host, "port": args.port, "workers": args.workers},
        )
    except ConfigError as exc:
        raise UsageError(f"bad configuration: {exc}") from None

    from agentrouter.server import serve

    try:
        serve(settings)
    except SystemExit as exc:  # Granian exits non-zero when a worker failed to start
        if exc.code not in (0, None):
            raise CommandError("the server stopped because a worker failed (see the log above)") from None
    except OSError as exc:
        raise CommandError(f"cannot start: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - the CLI's edge: a start-up failure is a message, not a traceback
        # Core.open failures (data directory, secret, database) are explained by their message.
        print(f"agentrouter: error: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
