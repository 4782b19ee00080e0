"""Outgoing mail: SMTP through aiosmtplib, or the server log and an outbox directory.

``Mailer.send(to, subject, text)`` returns at once: delivery runs in a task the
mailer keeps (``drain()`` waits for every pending one; ``aclose()`` at shutdown), so
a caller's answer never waits for — or reveals, by its timing — whether a mail
went out. That matters for account enumeration: registering a known address sends
a "someone tried to register" mail, an unknown one a verification mail; resetting
an unknown address sends nothing.

With ``[smtp] host`` set, mail goes to that server (``security``: ``starttls``
upgrades a plain connection and refuses a server that cannot; ``tls`` connects with
TLS; ``none`` sends in the clear, for a relay on the same host), authenticated when
``user`` is set, with up to ``RETRIES`` further attempts on failure; the log says
who was mailed and what subject, never the body (it carries one-time links).

Without it (the embedded default) every mail is written to the server log at INFO,
body included — that is how a newcomer gets the verification link offline — and to
``<data dir>/outbox/<time>-<n>.eml`` (mode 0600), which any mail client opens.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Final

import aiosmtplib

from agentrouter.config import SmtpSettings

__all__ = ["OUTBOX_DIR", "Mailer"]

log = logging.getLogger("agentrouter.mail")

OUTBOX_DIR: Final = "outbox"
RETRIES: Final = 2
BACKOFF: Final = (0.5, 2.0)


class Mailer:
    def __init__(self, smtp: SmtpSettings, data_dir: Path) -> None:
        self._smtp = smtp
        self.outbox = data_dir / OUTBOX_DIR
        self.sender = smtp.sender or f"AgentRouter <agentrouter@{socket.gethostname() or 'localhost'}>"
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count(1)
        self.delivered = 0
        """Mails delivered (or written to the outbox) by this mailer."""
        self.failed = 0
        """Mails given up on after every attempt (logged as errors)."""

    @property
    def uses_smtp(self) -> bool:
        return self._smtp.host is not None

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2].rstrip(">") or "localhost")
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        return msg

    def send(self, to: str, subject: str, text: str) -> None:
        """Queue a plain-text mail; delivery happens in the background."""
        msg = self.message(to, subject, text)
        task = asyncio.get_running_loop().create_task(self._deliver(msg), name=f"mail to {to}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every queued mail was delivered or given up on."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()

    async def _deliver(self, msg: EmailMessage) -> None:
        try:
            if self.uses_smtp:
                await self._smtp_send(msg)
            else:
                await asyncio.to_thread(self._write_outbox, msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a mail that cannot go out is logged, never raised
            self.failed += 1
            log.error("could not send mail %r to %s: %s", msg["Subject"], msg["To"], exc)
        else:
            self.delivered += 1

    async def _smtp_send(self, msg: EmailMessage) -> None:
        s = self._smtp
        context = None
        if s.security != "none":
            context = ssl.create_default_context(cafile=s.ca_file)
        for attempt in range(RETRIES + 1):
            try:
                await aiosmtplib.send(
                    msg,
                    hostname=s.host,
                    port=s.effective_port,
                    username=s.user,
                    password=s.password,
                    use_tls=s.security == "tls",
                    start_tls=s.security == "starttls",
                    tls_context=context,
                    timeout=s.timeout,
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                if attempt == RETRIES:
                    raise
                log.warning(
                    "mail %r to %s: attempt %d failed (%s); trying again", msg["Subject"], msg["To"], attempt + 1, exc
                )
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            else:
                log.info("sent mail %r to %s through %s", msg["Subject"], msg["To"], s.host)
                return

    def _write_outbox(self, msg: EmailMessage) -> None:
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{next(self._seq):04d}.eml"
        path = self.outbox / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msg.as_bytes())
        body = msg.get_content() if not msg.is_multipart() else ""
        log.info(
            "mail (no SMTP server configured: written to %s)\nTo: %s\nSubject: %s\n\n%s",
            path,
            msg["To"],
            msg["Subject"],
            body.rstrip(),
        )
