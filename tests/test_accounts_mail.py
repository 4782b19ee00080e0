"""Mail through a real SMTP server (aiosmtpd on loopback: plain with AUTH, STARTTLS
with a test CA), following the links it received; the log-and-outbox default; and
the timing of answers for known and unknown addresses (no enumeration)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from agentrouter._core import FakeClock
from agentrouter.accounts.errors import InvalidCredentials
from agentrouter.accounts.passwords import HASH_NICENESS, PasswordHasher
from agentrouter.accounts.service import SignedIn
from agentrouter.actor import INSTANCE
from tests.accounts_helpers import STRONG, accounts_core, body, outbox, parse_mail, service, token_in
from tests.api_fixtures import free_port
from tests.waiting import until


class Inbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.authenticated: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(parse_mail(envelope.original_content or envelope.content))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.authenticated.append(bool(session.authenticated))
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"mailer", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=_authenticator, auth_require_tls=False
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_tls(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=server_ctx, require_starttls=True)
    controller.start()
    try:
        yield inbox, port, ca_file
    finally:
        controller.stop()


async def test_registration_and_reset_through_a_real_smtp_server(
    smtp: tuple[Inbox, int], data_dir: Path, clock: FakeClock
) -> None:
    inbox, port = smtp
    core = await accounts_core(
        data_dir,
        clock,
        AGENTROUTER_SMTP_HOST="127.0.0.1",
        AGENTROUTER_SMTP_PORT=str(port),
        AGENTROUTER_SMTP_SECURITY="none",
        AGENTROUTER_SMTP_USER="mailer",
        AGENTROUTER_SMTP_PASSWORD="s3cret",
        AGENTROUTER_SMTP_SENDER="AgentRouter <noreply@gateway.test>",
        AGENTROUTER_PUBLIC_URL="https://gateway.test/",
    )
    try:
        acc = service(core)
        await acc.register(email="Ann@Example.com", password=STRONG)
        await acc.mailer.drain()
        [mail] = inbox.mails
        assert inbox.envelopes == [("noreply@gateway.test", ["Ann@Example.com"])]
        assert mail["From"] == "AgentRouter <noreply@gateway.test>" and mail["To"] == "Ann@Example.com"
        assert "https://gateway.test/verify-email?token=" in body(mail)
        assert (await acc.verify_email(token_in(mail))).email_verified

        await acc.request_password_reset("ann@example.com")
        await acc.mailer.drain()
        reset = inbox.mails[-1]
        assert "https://gateway.test/reset-password?token=" in body(reset)
        await acc.reset_password(token_in(reset), "Fresh-Meadow-88-Lark")
        assert isinstance(await acc.sign_in(email="ann@example.com", password="Fresh-Meadow-88-Lark"), SignedIn)
        assert not (data_dir / "outbox").exists()  # SMTP configured: nothing in the outbox
        assert acc.mailer.delivered == 2 and acc.mailer.failed == 0
        assert inbox.authenticated == [True, True]
    finally:
        await core.close()


async def test_starttls_with_a_private_ca(smtp_tls: tuple[Inbox, int, Path], data_dir: Path) -> None:
    inbox, port, ca_file = smtp_tls
    core = await accounts_core(
        data_dir,
        AGENTROUTER_SMTP_HOST="127.0.0.1",
        AGENTROUTER_SMTP_PORT=str(port),
        AGENTROUTER_SMTP_SECURITY="starttls",
        AGENTROUTER_SMTP_CA_FILE=str(ca_file),
    )
    try:
        acc = service(core)
        await acc.create_invitation(INSTANCE, email="ben@example.com")
        await acc.mailer.drain()
        [mail] = inbox.mails
        assert "/register?token=" in body(mail)
        assert acc.mailer.failed == 0
    finally:
        await core.close()


async def test_a_dead_smtp_server_is_logged_not_raised(
    data_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrouter.accounts.mail as mail_module

    monkeypatch.setattr(mail_module, "BACKOFF", (0.01, 0.01))
    core = await accounts_core(
        data_dir,
        AGENTROUTER_SMTP_HOST="127.0.0.1",
        AGENTROUTER_SMTP_PORT=str(free_port()),
        AGENTROUTER_SMTP_SECURITY="none",
    )
    try:
        acc = service(core)
        with caplog.at_level(logging.WARNING, logger="agentrouter.mail"):
            await acc.register(email="cal@example.com", password=STRONG)  # answers at once
            await acc.mailer.drain()
        assert acc.mailer.failed == 1
        assert "could not send mail" in caplog.text and "token=" not in caplog.text
    finally:
        await core.close()


async def test_without_smtp_mail_goes_to_the_log_and_the_outbox(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    core = await accounts_core(data_dir)
    try:
        acc = service(core)
        with caplog.at_level(logging.INFO, logger="agentrouter.mail"):
            await acc.register(email="dee@example.com", password=STRONG)
            await acc.mailer.drain()
        [mail] = outbox(data_dir)
        token = token_in(mail)
        assert token in caplog.text and "dee@example.com" in caplog.text  # the newcomer's way to the link
        assert (await acc.verify_email(token)).email_verified
    finally:
        await core.close()


async def test_known_and_unknown_addresses_take_about_the_same_time(data_dir: Path) -> None:
    """Medians of the wall time of sign-in, reset and registration for a known and an
    unknown address, interleaved, within a factor of 2 (the Argon2 work dominates both;
    without the dummy hash an unknown address would answer ~100x faster)."""
    core = await accounts_core(
        data_dir,
        AGENTROUTER_ACCOUNTS_SIGNIN_ACCOUNT_ATTEMPTS="1000",
        AGENTROUTER_ACCOUNTS_SIGNIN_IP_ATTEMPTS="1000",
    )
    try:
        acc = service(core)
        await acc.create_user(INSTANCE, email="known@example.com", password=STRONG)
        await acc.hasher.verify_dummy("warm up")

        async def signin(address: str) -> None:
            with pytest.raises(InvalidCredentials):
                await acc.sign_in(email=address, password="Wrong-Horse-Battery-7")

        async def reset(address: str) -> None:
            await acc.request_password_reset(address)

        async def register(address: str) -> None:
            await acc.register(email=address, password="Other-Horse-Battery-7")

        n = 5
        for name, op in (("sign-in", signin), ("register", register)):
            known: list[float] = []
            unknown: list[float] = []
            for i in range(n):
                for address, into in (("known@example.com", known), (f"unknown{i}-{name}@example.com", unknown)):
                    start = time.perf_counter()
                    await op(address)
                    into.append(time.perf_counter() - start)
            k, u = statistics.median(known), statistics.median(unknown)
            assert max(k, u) / min(k, u) < 2.0, (name, k, u)
        # A reset does no hashing at all: both answer at once (well under a hash's time).
        for address in ("known@example.com", "nobody@example.com"):
            start = time.perf_counter()
            await reset(address)
            assert time.perf_counter() - start < 0.05
        await acc.mailer.drain()
    finally:
        await core.close()


async def test_hashing_never_stalls_the_event_loop(data_dir: Path) -> None:
    """20 concurrent sign-ins (each ~100 ms of Argon2 CPU) while a ticker measures how
    late the loop wakes it: the worst lag stays far below one hash's time."""
    core = await accounts_core(
        data_dir,
        AGENTROUTER_ACCOUNTS_SIGNIN_ACCOUNT_ATTEMPTS="1000",
        AGENTROUTER_ACCOUNTS_SIGNIN_IP_ATTEMPTS="1000",
    )
    try:
        acc = service(core)
        await acc.create_user(INSTANCE, email="busy@example.com", password=STRONG)
        start = time.perf_counter()
        await acc.sign_in(email="busy@example.com", password=STRONG)
        one = time.perf_counter() - start

        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t - 0.005)

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(acc.sign_in(email="busy@example.com", password=STRONG) for _ in range(20)), return_exceptions=True
        )
        done.set()
        await tick
        assert all(isinstance(r, SignedIn) for r in results), results
        await until(lambda: len(lags) > 10, "ticks")
        assert max(lags) < max(0.05, one / 2), (max(lags), one)
    finally:
        await core.close()


def test_hashing_threads_run_below_the_event_loops_priority() -> None:
    """On a busy host the scheduler serves the event loop (``/v1``) before a hash: the
    pool's threads (and argon2's lane threads, which inherit it) are niced."""
    hasher = PasswordHasher()
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = hasher._pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert pool == min(own + HASH_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the loop's thread is untouched
