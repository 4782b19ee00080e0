"""``agentrouter alerts [--kind K] [--key ID] [--all] [--json]`` and ``agentrouter alerts ack ID``.

The unusual-usage monitor's findings, newest first; open ones unless ``--all``.
The same data as ``GET /api/v1/alerts`` and ``POST /api/v1/alerts/{id}/ack``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import msgspec

from agentrouter.cli.output import CommandError, UsageError, add_json_flag, emit_json, wants_json
from agentrouter.cli.usage import run
from agentrouter.core import Core
from agentrouter.store.models import ALERT_KINDS, AlertRow

DEFAULT_LIMIT = 100


def register(sub: Any) -> None:
    p = sub.add_parser("alerts", help="unusual-usage alerts", description=__doc__)
    p.add_argument("--kind", choices=ALERT_KINDS, help="only this kind")
    p.add_argument("--key", metavar="ID", help="only alerts of this key")
    p.add_argument("--all", action="store_true", help="include acknowledged alerts")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many (default {DEFAULT_LIMIT})")
    add_json_flag(p)
    p.set_defaults(func=_list)
    cmds = p.add_subparsers(dest="alerts_command", metavar="ACTION")
    ack = cmds.add_parser("ack", help="acknowledge an alert")
    ack.add_argument("id")
    add_json_flag(ack)
    ack.set_defaults(func=_ack)


def alert_json(a: AlertRow) -> dict[str, Any]:
    return {
        "id": a.id,
        "key_id": a.key_id,
        "kind": a.kind,
        "subject": a.subject,
        "evidence": a.evidence,
        "created_at": a.created_at,
        "acknowledged_at": a.acknowledged_at,
    }


def _list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")

    async def go(core: Core) -> list[AlertRow]:
        return await core.store.list_alerts(
            kind=args.kind, key_id=args.key, acknowledged=None if args.all else False, limit=args.limit
        )

    rows = run(args, go)
    if wants_json(args):
        emit_json([alert_json(a) for a in rows])
        return 0
    if not rows:
        print("No alerts." if args.all else "No open alerts.")
        return 0
    header = ("ID", "CREATED (UTC)", "KEY", "KIND", "STATE", "WHAT")
    table = [header] + [
        (a.id, _when(a.created_at), a.key_id, a.kind, "acknowledged" if a.acknowledged_at else "open", summary(a))
        for a in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _ack(args: argparse.Namespace) -> int:
    async def go(core: Core) -> AlertRow | None:
        return await core.store.acknowledge_alert(args.id, now=core.now())

    row = run(args, go)
    if row is None:
        raise CommandError(f"no alert with id {args.id!r}")
    if wants_json(args):
        emit_json(alert_json(row))
    else:
        print(f"Acknowledged alert {row.id} ({row.kind} on key {row.key_id}).")
    return 0


def summary(a: AlertRow) -> str:
    """One line of evidence for people."""
    ev = a.evidence
    if a.kind == "volume_spike":
        return (
            f"{ev.get('requests')} requests in the hour from {_when(ev.get('window_start'))}; "
            f"usual busiest hour {ev.get('baseline_typical_peak_hour')}"
        )
    if a.kind == "unusual_hour":
        return (
            f"{ev.get('requests')} requests at {ev.get('hour_of_day_utc'):02d}:00 UTC; "
            f"usually active {_hours(ev.get('usual_hours_utc') or [])} UTC"
        )
    if a.kind == "failure_rate":
        rate = ev.get("rate") or 0.0
        return (
            f"{ev.get('failures')}/{ev.get('requests')} failed ({rate:.0%}; {ev.get('failures_4xx')} 4xx, "
            f"{ev.get('failures_5xx')} 5xx), usually {(ev.get('baseline_rate') or 0.0):.0%}"
        )
    if a.kind == "new_ip":
        return f"first use from {ev.get('ip')} ({ev.get('requests')} requests); {ev.get('known_networks')} known"
    return msgspec.json.encode(ev).decode()


def _hours(hours: list[int]) -> str:
    if not hours:
        return "never"
    spans: list[tuple[int, int]] = []
    for h in sorted(hours):
        if spans and h == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], h)
        else:
            spans.append((h, h))
    return ", ".join(f"{a:02d}-{b + 1:02d}h" if a != b else f"{a:02d}h" for a, b in spans)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
