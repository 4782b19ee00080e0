"""``agentrouter serve``: run the gateway (Granian, N workers) until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
from typing import Any

from agentrouter.cli.output import CommandError
from agentrouter.errors import AgentRouterError


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
    from agentrouter.cli.context import settings_for

    # `agentrouter --config X --data-dir D serve` and `agentrouter serve --config X` alike;
    # a bad setting is a ConfigError (exit status 2, the message names the field).
    settings = settings_for(args, config=args.config, host=args.host, port=args.port, workers=args.workers)

    from agentrouter.server import serve

    try:
        serve(settings)
    except SystemExit as exc:  # Granian exits non-zero when a worker failed to start
        if exc.code not in (0, None):
            raise CommandError("the server stopped because a worker failed (see the log above)") from None
    except OSError as exc:
        raise CommandError(f"cannot start: {exc.strerror or exc}") from None
    except AgentRouterError as exc:  # the data directory, its secret, database or limiter region
        raise CommandError(f"cannot start: {exc}") from None
    return 0
