"""``agentrouter users …`` and ``agentrouter invites …``: accounts from the server's host.

The CLI acts as the operator (``agentrouter.actor.INSTANCE``): it may do anything an
admin may, whatever the registration mode. A user is named by email address or id.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentrouter.accounts.service import AccountService
from agentrouter.actor import INSTANCE
from agentrouter.cli.context import run_with_core
from agentrouter.cli.output import UsageError, add_json_flag, emit_json, wants_json
from agentrouter.core import Core
from agentrouter.store.models import InvitationRow, SessionRow, UserRow


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="manage accounts (people who sign in to the console)")
    cmds = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    p = cmds.add_parser(
        "create",
        help="create a user (the address counts as verified)",
        description=(
            "Create a user whatever the registration mode; --admin makes the first admin (the same as the "
            "setup link `serve` prints). Without --password-stdin the user gets a one-time link to choose a "
            "password (printed here and mailed)."
        ),
    )
    p.add_argument("--email", required=True)
    p.add_argument("--name", help="display name")
    p.add_argument("--admin", action="store_true", help="role admin (default: member)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--unverified", action="store_true", help="mail a verification link instead of trusting the address")
    add_json_flag(p)
    p.set_defaults(func=_create)

    p = cmds.add_parser("list", help="list users")
    add_json_flag(p)
    p.set_defaults(func=_list)

    p = cmds.add_parser("show", help="show one user, their sessions and identities")
    p.add_argument("user", metavar="EMAIL|ID")
    add_json_flag(p)
    p.set_defaults(func=_show)

    for name, text in (
        ("disable", "disable a user: every session ends and their keys stop working at once"),
        ("enable", "enable a disabled user (their deleted keys stay deleted)"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("user", metavar="EMAIL|ID")
        add_json_flag(p)
        p.set_defaults(func=_disable if name == "disable" else _enable)

    p = cmds.add_parser("set-role", help="make a user admin or member")
    p.add_argument("user", metavar="EMAIL|ID")
    p.add_argument("role", choices=("admin", "member"))
    add_json_flag(p)
    p.set_defaults(func=_set_role)

    p = cmds.add_parser("reset-password", help="a one-time password reset link (printed and mailed)")
    p.add_argument("user", metavar="EMAIL|ID")
    add_json_flag(p)
    p.set_defaults(func=_reset_password)

    p = cmds.add_parser("sessions", help="list a user's sessions (devices)")
    p.add_argument("user", metavar="EMAIL|ID")
    add_json_flag(p)
    p.set_defaults(func=_sessions)

    p = cmds.add_parser("logout-all", help="end every session of a user (log out all devices)")
    p.add_argument("user", metavar="EMAIL|ID")
    add_json_flag(p)
    p.set_defaults(func=_logout_all)

    invites = sub.add_parser("invites", help="invitations to register")
    icmds = invites.add_subparsers(dest="invites_command", required=True, metavar="ACTION")
    p = icmds.add_parser("create", help="a one-time invitation link (mailed when bound to an address)")
    p.add_argument("--email", help="only this address may use it")
    p.add_argument("--admin", action="store_true", help="the new user is an admin")
    p.add_argument("--days", type=float, help="how long it works (default: accounts.invitation_days, 7)")
    add_json_flag(p)
    p.set_defaults(func=_invite)


async def resolve_user(acc: AccountService, ref: str) -> UserRow:
    """A user by id (``usr_…``) or email address."""
    if ref.startswith("usr_") and "@" not in ref:
        return await acc.get_user(INSTANCE, ref)
    return await acc.find_user(INSTANCE, ref)


def _run(args: argparse.Namespace, op: Any) -> Any:
    async def go(core: Core) -> Any:
        acc = core.accounts
        try:
            return await op(acc)
        finally:
            await acc.mailer.drain()

    return run_with_core(args, go)


# -- commands ----------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    password = None
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise UsageError("--password-stdin: no password on stdin")

    async def op(acc: AccountService) -> tuple[UserRow, str | None]:
        return await acc.create_user(
            INSTANCE,
            email=args.email,
            password=password,
            display_name=args.name,
            role="admin" if args.admin else "member",
            verified=not args.unverified,
        )

    user, link = _run(args, op)
    if wants_json(args):
        emit_json({**user_json(user), "set_password_link": link})
        return 0
    print(f"Created {user.role} {user.email} ({user.id}).")
    if link:
        print(f"\nThey choose their password with this one-time link (also mailed to them):\n\n    {link}\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows: list[UserRow] = _run(args, lambda acc: acc.list_users(INSTANCE))
    if wants_json(args):
        emit_json([user_json(u) for u in rows])
        return 0
    if not rows:
        print("No users yet. Create the first admin with: agentrouter users create --email EMAIL --admin")
        return 0
    header = ("EMAIL", "ID", "ROLE", "VERIFIED", "2FA", "STATE", "CREATED", "LAST LOGIN")
    table = [header] + [
        (
            u.email,
            u.id,
            u.role,
            "yes" if u.email_verified else "no",
            "on" if u.totp_enabled else "off",
            "disabled" if u.disabled else "active",
            _when(u.created_at),
            _when(u.last_login_at),
        )
        for u in rows
    ]
    _table(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    async def op(acc: AccountService) -> tuple[UserRow, list[SessionRow], list[Any]]:
        user = await resolve_user(acc, args.user)
        return user, await acc.list_sessions(INSTANCE, user.id), await acc.list_identities(INSTANCE, user.id)

    user, sessions, identities = _run(args, op)
    if wants_json(args):
        emit_json(
            {
                **user_json(user),
                "sessions": [session_json(s) for s in sessions],
                "identities": [{"provider": i.provider, "subject": i.subject, "email": i.email} for i in identities],
            }
        )
        return 0
    fields = [
        ("id", user.id),
        ("email", user.email + ("" if user.email_verified else " (not verified)")),
        ("name", user.display_name or "-"),
        ("role", user.role),
        ("state", "disabled" if user.disabled else "active"),
        ("password", "set" if user.has_password else "none"),
        ("two-factor", "on" if user.totp_enabled else "off"),
        ("created", _when(user.created_at)),
        ("last login", _when(user.last_login_at)),
        ("sessions", str(len(sessions))),
        ("identities", ", ".join(f"{i.provider} {i.subject}" for i in identities) or "none"),
    ]
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        print(f"{k.ljust(width)}  {v}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def _enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    async def op(acc: AccountService) -> UserRow:
        user = await resolve_user(acc, args.user)
        return await acc.set_disabled(INSTANCE, user.id, disabled)

    user = _run(args, op)
    if wants_json(args):
        emit_json(user_json(user))
    elif disabled:
        print(f"Disabled {user.email}: every session ended, and their keys no longer work.")
    else:
        print(f"Enabled {user.email}. Keys deleted when they were disabled stay deleted.")
    return 0


def _set_role(args: argparse.Namespace) -> int:
    async def op(acc: AccountService) -> UserRow:
        user = await resolve_user(acc, args.user)
        return await acc.set_role(INSTANCE, user.id, args.role)

    user = _run(args, op)
    if wants_json(args):
        emit_json(user_json(user))
    else:
        print(f"{user.email} is now {user.role}.")
    return 0


def _reset_password(args: argparse.Namespace) -> int:
    async def op(acc: AccountService) -> tuple[UserRow, str]:
        user = await resolve_user(acc, args.user)
        return user, await acc.issue_reset_link(INSTANCE, user.id)

    user, link = _run(args, op)
    if wants_json(args):
        emit_json({"user": user_json(user), "reset_link": link})
    else:
        print(f"A one-time reset link for {user.email} (also mailed; using it signs out every device):\n\n    {link}\n")
    return 0


def _sessions(args: argparse.Namespace) -> int:
    async def op(acc: AccountService) -> list[SessionRow]:
        user = await resolve_user(acc, args.user)
        return await acc.list_sessions(INSTANCE, user.id)

    rows: list[SessionRow] = _run(args, op)
    if wants_json(args):
        emit_json([session_json(s) for s in rows])
        return 0
    if not rows:
        print("No sessions.")
        return 0
    header = ("DEVICE", "ID", "SIGNED IN", "LAST SEEN", "EXPIRES", "IP", "METHOD")
    _table(
        [header]
        + [
            (
                s.device or "-",
                s.id,
                _when(s.created_at),
                _when(s.last_seen_at),
                _when(s.expires_at),
                s.client_ip or "-",
                s.method,
            )
            for s in rows
        ]
    )
    return 0


def _logout_all(args: argparse.Namespace) -> int:
    async def op(acc: AccountService) -> tuple[UserRow, int]:
        user = await resolve_user(acc, args.user)
        return user, await acc.end_sessions(INSTANCE, user_id=user.id)

    user, ended = _run(args, op)
    if wants_json(args):
        emit_json({"user": user_json(user), "sessions_ended": ended})
    else:
        print(f"Ended {ended} session{'s' if ended != 1 else ''} of {user.email}.")
    return 0


def _invite(args: argparse.Namespace) -> int:
    async def op(acc: AccountService) -> Any:
        return await acc.create_invitation(
            INSTANCE, email=args.email, role="admin" if args.admin else "member", days=args.days
        )

    created = _run(args, op)
    if wants_json(args):
        emit_json({**invitation_json(created.invitation), "link": created.link})
        return 0
    who = f"for {args.email} (mailed there)" if args.email else "for anyone who has it"
    print(f"Invitation {created.invitation.id} {who}, until {_when(created.invitation.expires_at)}:\n")
    print(f"    {created.link}\n")
    print("It works once.")
    return 0


# -- shapes ------------------------------------------------------------------------


def user_json(u: UserRow) -> dict[str, Any]:
    """The JSON shape of a user for scripts (never a hash or a secret)."""
    return {
        "id": u.id,
        "email": u.email,
        "display_name": u.display_name,
        "role": u.role,
        "email_verified": u.email_verified,
        "email_verified_at": u.email_verified_at,
        "disabled": u.disabled,
        "has_password": u.has_password,
        "totp_enabled": u.totp_enabled,
        "created_at": u.created_at,
        "last_login_at": u.last_login_at,
    }


def session_json(s: SessionRow) -> dict[str, Any]:
    return {
        "id": s.id,
        "device": s.device,
        "method": s.method,
        "created_at": s.created_at,
        "last_seen_at": s.last_seen_at,
        "expires_at": s.expires_at,
        "client_ip": s.client_ip,
        "user_agent": s.user_agent,
    }


def invitation_json(i: InvitationRow) -> dict[str, Any]:
    return {
        "id": i.id,
        "email": i.email,
        "role": i.role,
        "created_at": i.created_at,
        "expires_at": i.expires_at,
        "used_at": i.used_at,
    }


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")
