"""``agentrouter usage [KEY] [--since] [--until] [--by minute|hour|day] [--json]``.

The same figures as ``GET /api/v1/usage`` (and ``/api/v1/keys/{id}/usage``), read
from the request log: totals, the series (every bucket in ``--json``; only buckets
with requests in the table) and the per-model breakdown.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from agentrouter.api.errors import ApiError
from agentrouter.api.params import parse_time
from agentrouter.cli.context import run_with_core
from agentrouter.cli.output import CommandError, UsageError, add_json_flag, emit_json, wants_json
from agentrouter.core import Core
from agentrouter.keys import KeyNotFound
from agentrouter.store import KeyRow
from agentrouter.store.analytics import UsageQueryError, UsageReport, UsageStats

T = TypeVar("T")
DEFAULT_SINCE = "24h"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "usage",
        help="usage statistics (all keys, or one)",
        description="Requests, failures, tokens, latency and client IPs from the request log.",
    )
    p.add_argument("key", nargs="?", metavar="KEY", help="a key id or a key name (default: every key)")
    p.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help="start: a duration before now (24h, 7d), a date (2024-05-01), an RFC 3339 time "
        "or Unix seconds (default 24h)",
    )
    p.add_argument("--until", help="end (exclusive), in the same forms (default now)")
    p.add_argument("--by", choices=("minute", "hour", "day"), default="hour", help="bucket size (default hour)")
    add_json_flag(p)
    p.set_defaults(func=_usage)


def _usage(args: argparse.Namespace) -> int:
    async def go(core: Core) -> tuple[KeyRow | None, UsageReport]:
        now = core.now()
        until = now if args.until is None else _time(args.until, now, "--until")
        since = _time(args.since, now, "--since")
        row = await resolve_key(core, args.key) if args.key else None
        report = await core.store.usage(since=since, until=until, bucket=args.by, key_id=row.id if row else None)
        return row, report

    row, report = run(args, go)
    if wants_json(args):
        emit_json(report)
        return 0
    who = f"key {row.id}" + (f" ({row.name})" if row and row.name else "") if row else "all keys"
    print(f"Usage of {who}, {_when(report.since)} to {_when(report.until)} UTC, by {report.bucket}")
    print()
    t = report.totals
    width = 10
    for label, value in (
        ("requests", f"{t.requests} ({t.successes} ok, {t.failures_4xx} 4xx, {t.failures_5xx} 5xx)"),
        ("tokens", f"{t.input_tokens} in, {t.output_tokens} out"),
        ("latency", _latency(t)),
        ("client IPs", str(t.distinct_client_ips)),
    ):
        print(f"{label.ljust(width)}  {value}")
    used = [b for b in report.series if b.requests]
    if used:
        print()
        _table(
            ("TIME (UTC)", "REQUESTS", "OK", "4XX", "5XX", "TOKENS IN/OUT", "P50 MS", "P95 MS", "IPS"),
            [(_when(b.start), *_cells(b)) for b in used],
        )
    if report.models:
        print()
        _table(
            ("MODEL", "REQUESTS", "OK", "4XX", "5XX", "TOKENS IN/OUT", "P50 MS", "P95 MS", "IPS"),
            [(m.model or "(none)", *_cells(m)) for m in report.models],
        )
    return 0


async def resolve_key(core: Core, ident: str) -> KeyRow:
    """A key by id, else by its (unique) name; deleted keys included."""
    try:
        return await core.keys.get(ident)
    except KeyNotFound:
        pass
    named = [r for r in await core.keys.list(include_deleted=True) if r.name == ident]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise UsageError(f"{len(named)} keys are named {ident!r}; give the key id instead")
    raise CommandError(f"no key with id or name {ident!r}")


def run(args: argparse.Namespace, op: Callable[[Core], Awaitable[T]]) -> T:
    """``run_with_core`` (the server's data directory, errors to exit statuses), and a
    usage range the store refuses as a usage error naming the flag."""
    try:
        return run_with_core(args, op)
    except UsageQueryError as exc:
        flag = {"by": "--by", "until": "--until", "since": "--since"}.get(exc.field, exc.field)
        raise UsageError(f"{flag}: {exc}") from None


def _time(text: str, now: float, flag: str) -> float:
    try:
        return parse_time(text, now=now, field=flag)
    except ApiError as exc:
        raise UsageError(exc.message) from None


def _cells(s: UsageStats) -> tuple[str, ...]:
    return (
        str(s.requests),
        str(s.successes),
        str(s.failures_4xx),
        str(s.failures_5xx),
        f"{s.input_tokens}/{s.output_tokens}",
        _ms(s.latency_ms_p50),
        _ms(s.latency_ms_p95),
        str(s.distinct_client_ips),
    )


def _latency(s: UsageStats) -> str:
    if s.latency_ms_p50 is None:
        return "-"
    return f"p50 {_ms(s.latency_ms_p50)} ms, p95 {_ms(s.latency_ms_p95)} ms"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
