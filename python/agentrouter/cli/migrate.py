"""``agentrouter migrate``: apply the store's pending schema migrations.

On PostgreSQL (``store_url``) this is the one step that changes the schema: ``serve``
and the other commands refuse a database that is behind and say to run this. It is
safe to run from several hosts at once (one applies, the others find nothing to do).
The SQLite file migrates itself when opened; ``migrate`` does the same explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from agentrouter.cli.output import add_json_flag, emit_json, wants_json


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply pending database migrations", description=__doc__)
    add_json_flag(p)
    p.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from agentrouter.cli.context import settings_for
    from agentrouter.datadir import ensure_data_dir
    from agentrouter.store import migrate_store
    from agentrouter.store.migrations import LATEST

    settings = settings_for(args)
    if settings.store_backend == "sqlite":
        ensure_data_dir(settings.data_path)
    where = settings.sqlite_path if settings.store_backend == "sqlite" else settings.store_url
    from agentrouter.config import redact_url

    shown = redact_url(str(where)) if settings.store_backend == "postgresql" else str(where)
    before, applied = asyncio.run(migrate_store(settings))
    if wants_json(args):
        emit_json({"store": shown, "version_before": before, "applied": applied, "version": LATEST})
    elif applied:
        print(f"{shown}: migrated from schema version {before} to {applied[-1]} ({', '.join(map(str, applied))})")
    else:
        print(f"{shown}: schema version {before} is up to date")
    return 0
