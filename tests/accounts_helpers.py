"""Helpers of the accounts tests: a core with accounts on a fake clock, the mails it
wrote (the outbox, or a real aiosmtpd server's inbox) and the links in them."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

from agentrouter._core import FakeClock
from agentrouter.accounts.mail import OUTBOX_DIR
from agentrouter.accounts.service import AccountService, SignedIn
from agentrouter.actor import INSTANCE, Actor
from agentrouter.core import Core
from tests.conftest import settings_on

STRONG = "Velvet-Harbor-42-Quince"
"""A password the policy accepts."""
OTHER_STRONG = "Amber7-Lantern-Drift-Oxbow"

_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_\-]+)")


async def accounts_core(
    data_dir: Path, clock: FakeClock | None = None, *, store_url: str | None = None, **env: str
) -> Core:
    """``Core.from_settings`` on ``store_url`` (None: the SQLite file) with
    ``AGENTROUTER_*`` ``env`` (registration open unless given)."""
    env.setdefault("AGENTROUTER_ACCOUNTS_REGISTRATION", "open")
    return await Core.from_settings(settings_on(data_dir, store_url=store_url, **env), clock=clock)


ACCOUNT_TABLES = ("users", "sessions", "account_tokens", "recovery_codes", "identities", "invitations", "audit_events")


async def stored_text(core: Core) -> str:
    """Every row of the accounts tables and the keys, as text (bytes included), from
    either backend; for SQLite the database file's bytes too."""
    from agentrouter.store.sql import q

    parts: list[str] = []
    for table in (*ACCOUNT_TABLES, "keys"):
        async with core.store._read() as db:  # type: ignore[attr-defined]
            rows = await db.fetch(q(f"SELECT * FROM {table}"))
        for row in rows:
            for value in row:
                parts.append(bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview) else str(value))
    for path in core.store.files():
        parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def service(core: Core) -> AccountService:
    return core.accounts


def outbox(data_dir: Path) -> list[EmailMessage]:
    """The mails written to ``<data dir>/outbox``, oldest first."""
    box = data_dir / OUTBOX_DIR
    if not box.exists():
        return []
    return [parse_mail(p.read_bytes()) for p in sorted(box.glob("*.eml"))]


def parse_mail(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def token_in(msg: EmailMessage) -> str:
    """The token of the (first) link in a mail."""
    m = _TOKEN.search(body(msg))
    assert m, body(msg)
    return m.group(1)


def mails_to(mails: list[EmailMessage], address: str) -> list[EmailMessage]:
    return [m for m in mails if m["To"] == address]


async def registered_user(core: Core, email_: str, *, password: str = STRONG, verified: bool = True) -> SignedIn:
    """A user created through the admin path (verified unless told) and signed in."""
    acc = service(core)
    await acc.create_user(INSTANCE, email=email_, password=password, verified=verified)
    result = await acc.sign_in(email=email_, password=password, client_ip="127.0.0.1", user_agent=FIREFOX)
    assert isinstance(result, SignedIn)
    return result


def actor_of(signed: SignedIn, core: Core) -> Actor:
    from agentrouter.actor import user_actor

    return user_actor(signed.user, via=f"session:{signed.session.id}", client_ip="127.0.0.1")


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
