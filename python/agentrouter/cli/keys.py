"""``agentrouter keys …``: create, list, show, update, delete and rotate API keys."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

import msgspec

from agentrouter.cli.context import run_with_core
from agentrouter.cli.output import UsageError, add_json_flag, emit_json, wants_json
from agentrouter.core import Core
from agentrouter.durations import format_duration, parse_duration
from agentrouter.keys import CreatedKey
from agentrouter.store import KeyRow

SHOWN_ONCE = "This key will not be shown again. Copy it now and keep it somewhere safe."


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage API keys")
    cmds = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    p = cmds.add_parser("create", help="create a key (shown once)")
    p.add_argument("--name", help="a friendly name")
    _limit_args(p)
    p.add_argument("--metadata", help='a JSON object, e.g. \'{"environment": "production"}\'')
    p.add_argument("--expires-in", metavar="DURATION", help="e.g. 30d; the key stops working then")
    p.add_argument(
        "--scope",
        choices=("inference", "manage"),
        default="inference",
        help="inference (default): /v1 calls; manage: the management API",
    )
    p.add_argument(
        "--owner",
        metavar="EMAIL",
        help="the user who owns the key (email or id; default: none, an instance key visible to admins)",
    )
    add_json_flag(p)
    p.set_defaults(func=_create)

    p = cmds.add_parser("list", help="list keys with usage totals")
    p.add_argument("--all", action="store_true", help="include deleted keys")
    add_json_flag(p)
    p.set_defaults(func=_list)

    p = cmds.add_parser("show", help="show one key")
    p.add_argument("id")
    add_json_flag(p)
    p.set_defaults(func=_show)

    p = cmds.add_parser("update", help="change name, limits, metadata or expiry")
    p.add_argument("id")
    p.add_argument("--name")
    _limit_args(p)
    p.add_argument("--no-limit", action="store_true", help="remove the rate limit")
    p.add_argument("--metadata", help="a JSON object; replaces the current metadata")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DURATION", help="expire DURATION from now")
    expiry.add_argument("--no-expiry", action="store_true", help="never expire")
    add_json_flag(p)
    p.set_defaults(func=_update)

    p = cmds.add_parser("delete", help="delete a key; requests with it fail at once")
    p.add_argument("id")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask to confirm")
    add_json_flag(p)
    p.set_defaults(func=_delete)

    p = cmds.add_parser("rotate", help="replace a key; the old one works for a grace period")
    p.add_argument("id")
    p.add_argument(
        "--grace", metavar="DURATION", default="0s", help="how long the old key keeps working (default 0s: not at all)"
    )
    add_json_flag(p)
    p.set_defaults(func=_rotate)


def _limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, metavar="N", help="requests allowed per interval")
    p.add_argument("--interval", metavar="SECONDS", help="the interval, in seconds or as a duration (default 60s)")


# -- commands ----------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    requests, interval = _parse_limit(args)
    metadata = _parse_metadata(args.metadata) if args.metadata is not None else None
    expires_in = _duration(args.expires_in, "--expires-in") if args.expires_in else None

    async def go(core: Core) -> CreatedKey:
        owner = None
        if args.owner is not None:
            from agentrouter.cli.users import resolve_user

            owner = (await resolve_user(core.accounts, args.owner)).id
        return await core.keys.create(
            name=args.name,
            requests=requests,
            interval=interval,
            metadata=metadata,
            expires_in=expires_in,
            scope=args.scope,
            owner=owner,
        )

    created = run_with_core(args, go)
    _print_created(args, created, "Created")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = run_with_core(args, lambda core: core.keys.list(include_deleted=args.all))
    if wants_json(args):
        emit_json([key_json(r) for r in rows])
        return 0
    if not rows:
        print("No keys yet. Create one with: agentrouter keys create --name NAME")
        return 0
    header = ("NAME", "ID", "PREFIX", "CREATED", "LAST USED", "RATE LIMIT", "REQUESTS", "FAILED", "TOKENS IN/OUT")
    table = [header] + [
        (
            (r.name or "-") + (" (deleted)" if r.state == "deleted" else ""),
            r.id,
            r.prefix,
            _when(r.created_at),
            _when(r.usage.last_used_at),
            rate_limit_text(r),
            str(r.usage.requests),
            str(r.usage.failures),
            f"{r.usage.input_tokens}/{r.usage.output_tokens}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    row = run_with_core(args, lambda core: core.keys.get(args.id))
    if wants_json(args):
        emit_json(key_json(row))
    else:
        _print_row(row)
    return 0


def _update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.no_limit:
        if args.requests is not None or args.interval is not None:
            raise UsageError("--no-limit cannot be combined with --requests or --interval")
        changes["requests"] = None
    elif args.requests is not None or args.interval is not None:
        if args.requests is not None:
            changes["requests"] = args.requests
        if args.interval is not None:
            changes["interval"] = _duration(args.interval, "--interval")
    if args.metadata is not None:
        changes["metadata"] = _parse_metadata(args.metadata)
    if args.no_expiry:
        changes["expires_at"] = None
    elif args.expires_in:
        changes["expires_at"] = time.time() + _duration(args.expires_in, "--expires-in")
    if not changes:
        raise UsageError(
            "nothing to update: give --name, --requests, --interval, --no-limit, "
            "--metadata, --expires-in or --no-expiry"
        )
    row = run_with_core(args, lambda core: core.keys.update(args.id, **changes))
    if wants_json(args):
        emit_json(key_json(row))
    else:
        print(f"Updated key {row.id}.")
        _print_row(row)
    return 0


def _delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete without confirmation: pass --yes")
        answer = input(f"Delete key {args.id}? Requests using it will fail at once. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Not deleted.")
            return 1
    row = run_with_core(args, lambda core: core.keys.delete(args.id))
    if wants_json(args):
        emit_json(key_json(row))
    else:
        print(f"Deleted key {row.id} ({row.prefix}). Requests using it now get 401.")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    grace = _duration(args.grace, "--grace")
    created = run_with_core(args, lambda core: core.keys.rotate(args.id, grace=grace))
    if not wants_json(args):
        until = "now" if grace == 0 else f"in {format_duration(grace)}"
        print(f"Rotated key {args.id}: the old key stops working {until}.")
    _print_created(args, created, "New key")
    return 0


# -- helpers -------------------------------------------------------------------


def _parse_limit(args: argparse.Namespace) -> tuple[int | None, float | None]:
    interval = _duration(args.interval, "--interval") if args.interval is not None else None
    if interval is not None and args.requests is None:
        raise UsageError("--interval needs --requests (how many requests per interval)")
    return args.requests, interval


def _parse_metadata(text: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise UsageError(
            f'--metadata is not valid JSON ({why}); give an object like \'{{"environment": "production"}}\''
        ) from None
    if not isinstance(value, dict):
        raise UsageError('--metadata must be a JSON object, like \'{"environment": "production"}\'')
    return value


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def rate_limit_text(row: KeyRow) -> str:
    if row.requests is None or row.interval is None:
        return "no limit"
    return f"{row.requests}/{format_duration(row.interval)}"


def key_json(row: KeyRow) -> dict[str, Any]:
    """The JSON shape of a key for scripts (never the key or its digest)."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "last_used_at": row.usage.last_used_at,
        "rate_limit": None if row.requests is None else {"requests": row.requests, "interval": row.interval},
        "metadata": row.metadata,
        "expires_at": row.expires_at,
        "state": row.state,
        "scope": row.scope,
        "owner": row.owner,
        "rotated_to": row.rotated_to,
        "usage": msgspec.to_builtins(row.usage),
    }


def _print_created(args: argparse.Namespace, created: CreatedKey, verb: str) -> None:
    if wants_json(args):
        emit_json({**key_json(created.row), "key": created.key, "warning": SHOWN_ONCE})
        return
    row = created.row
    print(f"{verb} key {row.id}{f' ({row.name})' if row.name else ''}, rate limit {rate_limit_text(row)}:")
    print()
    print(f"    {created.key}")
    print()
    print(SHOWN_ONCE)


def _print_row(row: KeyRow) -> None:
    u = row.usage
    fields = [
        ("id", row.id),
        ("name", row.name or "-"),
        ("prefix", row.prefix),
        ("state", row.state),
        ("scope", row.scope),
        ("created", _when(row.created_at)),
        ("last used", _when(u.last_used_at) + (f" from {u.last_client_ip}" if u.last_client_ip else "")),
        ("rate limit", rate_limit_text(row)),
        ("expires", _when(row.expires_at) if row.expires_at else "never"),
        ("metadata", msgspec.json.encode(row.metadata).decode()),
        ("requests", f"{u.requests} ({u.successes} ok, {u.failures_4xx} 4xx, {u.failures_5xx} 5xx)"),
        ("tokens", f"{u.input_tokens} in, {u.output_tokens} out"),
    ]
    if row.rotated_to:
        fields.append(("rotated to", row.rotated_to))
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        print(f"{k.ljust(width)}  {v}")


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")
