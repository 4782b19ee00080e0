"""The accounts service on a real SQLite file, the outbox mailer and the real throttle:
registration, verification, sign-in, sessions, resets, the first admin, invitations,
registration modes and disabled users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentrouter._core import AUTH_OK, AUTH_REVOKED, FakeClock
from agentrouter.accounts.errors import (
    AccountDisabled,
    AccountInputError,
    Conflict,
    InvalidCredentials,
    InvalidToken,
    PermissionDenied,
    RegistrationClosed,
    Throttled,
    WeakPassword,
)
from agentrouter.accounts.service import SignedIn
from agentrouter.actor import INSTANCE
from agentrouter.core import Core
from agentrouter.keys import EmailNotVerified
from tests.accounts_helpers import (
    CHROME_MAC,
    FIREFOX,
    OTHER_STRONG,
    STRONG,
    accounts_core,
    actor_of,
    body,
    mails_to,
    outbox,
    registered_user,
    service,
    stored_text,
    token_in,
)

pytestmark = pytest.mark.store_backends


@pytest.fixture
async def acore(data_dir: Path, clock: FakeClock, store_url: str | None) -> AsyncIterator[Core]:
    core = await accounts_core(data_dir, clock, store_url=store_url)
    try:
        yield core
    finally:
        await core.close()


async def test_register_mails_a_link_that_verifies_once(acore: Core, data_dir: Path) -> None:
    acc = service(acore)
    await acc.register(email="Alice@Example.com", password=STRONG, display_name="Alice")
    await acc.mailer.drain()
    [mail] = outbox(data_dir)
    assert mail["To"] == "Alice@Example.com"
    assert "Verify" in mail["Subject"]
    token = token_in(mail)
    assert body(mail).count("http://127.0.0.1:8080/verify-email?token=") == 1
    assert (data_dir / "outbox").stat().st_mode & 0o077 == 0

    # Stored as given, compared case-insensitively; unverified users can sign in...
    signed = await acc.sign_in(email="alice@EXAMPLE.com", password=STRONG)
    assert isinstance(signed, SignedIn)
    assert signed.user.email == "Alice@Example.com" and not signed.user.email_verified
    # ... but cannot create keys, and the error says why.
    with pytest.raises(EmailNotVerified, match="verify your email address"):
        await acore.keys.create(name="k", actor=actor_of(signed, acore))

    user = await acc.verify_email(token)
    assert user.email_verified
    with pytest.raises(InvalidToken):
        await acc.verify_email(token)  # single use
    me = await acc.authenticate_session(signed.token)
    assert me is not None and me.actor.email_verified
    created = await acore.keys.create(name="k", actor=me.actor)
    assert created.row.owner == user.id


async def test_verification_links_expire_and_only_the_newest_works(
    acore: Core, data_dir: Path, clock: FakeClock
) -> None:
    acc = service(acore)
    await acc.register(email="bob@example.com", password=STRONG)
    await acc.resend_verification("BOB@example.com")
    await acc.resend_verification("nobody@example.com")  # silent
    await acc.mailer.drain()
    first, second = outbox(data_dir)
    with pytest.raises(InvalidToken):
        await acc.verify_email(token_in(first))
    clock.advance(48 * 3600 + 1)
    with pytest.raises(InvalidToken):
        await acc.verify_email(token_in(second))
    with pytest.raises(InvalidToken):
        await acc.verify_email("arv_not-a-real-token")
    with pytest.raises(InvalidToken):
        await acc.verify_email("garbage")


async def test_registering_a_known_address_gives_the_same_answer_and_warns_its_owner(
    acore: Core, data_dir: Path
) -> None:
    acc = service(acore)
    assert await acc.register(email="carol@example.com", password=STRONG) is None
    assert await acc.register(email="CAROL@example.com", password=OTHER_STRONG) is None
    await acc.mailer.drain()
    first, second = outbox(data_dir)
    assert "Verify" in first["Subject"]
    assert second["To"] == "carol@example.com"
    assert "tried to register" in second["Subject"]
    assert "token=" not in body(second)
    # The account is unchanged: the first password still signs in, the second does not.
    assert isinstance(await acc.sign_in(email="carol@example.com", password=STRONG), SignedIn)
    with pytest.raises(InvalidCredentials):
        await acc.sign_in(email="carol@example.com", password=OTHER_STRONG)
    assert len(await acc.list_users(INSTANCE)) == 1


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("Short1", "at least 8"),
        ("alllowercase1", "uppercase letter"),
        ("NoDigitsHere", "digit"),
        ("Password1", "common password"),
        ("Qwertyuiop1", "easy to guess"),
        ("Dianasmith1", "easy to guess"),
        ("A1" + "x" * 1023, "at most 1024"),
    ],
)
async def test_weak_passwords_are_refused_with_the_reason(acore: Core, password: str, why: str) -> None:
    with pytest.raises(WeakPassword, match=why) as err:
        await service(acore).register(email="diana.smith@example.com", password=password, display_name="Diana Smith")
    assert err.value.status == 422 and err.value.field == "password"
    assert await service(acore).list_users(INSTANCE) == []


async def test_long_passwords_are_kept_whole(acore: Core) -> None:
    acc = service(acore)
    long_pw = "Correct-Horse-9-" + "battery staple " * 60  # 916 characters, past zxcvbn's 72
    await acc.register(email="eve@example.com", password=long_pw)
    assert isinstance(await acc.sign_in(email="eve@example.com", password=long_pw), SignedIn)
    for wrong in (long_pw[:-1], long_pw[:72], long_pw + " "):
        with pytest.raises(InvalidCredentials):
            await acc.sign_in(email="eve@example.com", password=wrong)


async def test_bad_addresses_are_input_errors(acore: Core) -> None:
    for bad in ("", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com", "x" * 250 + "@example.com"):
        with pytest.raises(AccountInputError) as err:
            await service(acore).register(email=bad, password=STRONG)
        assert err.value.field == "email"


async def test_sign_in_answers_the_same_for_unknown_address_wrong_password_and_no_password(acore: Core) -> None:
    acc = service(acore)
    await acc.create_user(INSTANCE, email="frank@example.com", password=STRONG)
    await acc.create_user(INSTANCE, email="oauth-only@example.com")
    messages = set()
    for email_, pw in (
        ("frank@example.com", OTHER_STRONG),
        ("unknown@example.com", STRONG),
        ("oauth-only@example.com", STRONG),
    ):
        with pytest.raises(InvalidCredentials) as err:
            await acc.sign_in(email=email_, password=pw, client_ip="10.0.0.1")
        messages.add((str(err.value), err.value.status, err.value.code))
    assert messages == {("wrong email or password", 401, "invalid_credentials")}
    failures = await acc.audit_events(INSTANCE, event="sign_in_failed")
    assert len(failures) == 3 and all(e.client_ip == "10.0.0.1" for e in failures)


async def test_throttled_sign_ins_cost_no_hashing(data_dir: Path, clock: FakeClock, store_url: str | None) -> None:
    core = await accounts_core(
        data_dir,
        clock,
        store_url=store_url,
        AGENTROUTER_ACCOUNTS_SIGNIN_ACCOUNT_ATTEMPTS="3",
        AGENTROUTER_ACCOUNTS_SIGNIN_ACCOUNT_INTERVAL="60",
        AGENTROUTER_ACCOUNTS_SIGNIN_IP_ATTEMPTS="5",
        AGENTROUTER_ACCOUNTS_SIGNIN_IP_INTERVAL="60",
    )
    try:
        acc = service(core)
        await acc.create_user(INSTANCE, email="gina@example.com", password=STRONG)
        hashes = _count_hashing(acc)
        for _ in range(3):
            with pytest.raises(InvalidCredentials):
                await acc.sign_in(email="gina@example.com", password="Wrong-Password-1", client_ip="10.0.0.2")
        assert hashes() == 3
        with pytest.raises(Throttled) as err:
            await acc.sign_in(email="gina@example.com", password=STRONG, client_ip="10.0.0.3")
        assert err.value.status == 429 and 0 < err.value.retry_after <= 20
        assert hashes() == 3  # no Argon2 work for a throttled attempt
        # An unknown address is throttled the same way (nothing told apart).
        for _ in range(3):
            with pytest.raises(InvalidCredentials):
                await acc.sign_in(email="nobody@example.com", password=STRONG, client_ip="10.0.0.4")
        with pytest.raises(Throttled):
            await acc.sign_in(email="nobody@example.com", password=STRONG, client_ip="10.0.0.4")
        # Per client IP: 10.0.0.4 used 4 of 5; other accounts from it hit the IP quota.
        with pytest.raises(InvalidCredentials):
            await acc.sign_in(email="x1@example.com", password=STRONG, client_ip="10.0.0.4")
        with pytest.raises(Throttled, match="from this address"):
            await acc.sign_in(email="x2@example.com", password=STRONG, client_ip="10.0.0.4")
        clock.advance(err.value.retry_after)
        assert isinstance(await acc.sign_in(email="gina@example.com", password=STRONG, client_ip="10.0.0.5"), SignedIn)
    finally:
        await core.close()


async def test_registrations_and_reset_requests_are_throttled_per_client_ip_before_any_work(
    data_dir: Path, clock: FakeClock, store_url: str | None
) -> None:
    core = await accounts_core(
        data_dir,
        clock,
        store_url=store_url,
        AGENTROUTER_ACCOUNTS_REGISTRATION="open",
        AGENTROUTER_ACCOUNTS_REGISTER_IP_ATTEMPTS="3",
        AGENTROUTER_ACCOUNTS_REGISTER_IP_INTERVAL="60",
    )
    try:
        acc = service(core)
        hashes = _count_hashing(acc)
        for i in range(2):
            await acc.register(email=f"reg{i}@example.com", password=STRONG, client_ip="10.9.0.1")
        assert hashes() == 2
        await acc.request_password_reset("reg0@example.com", client_ip="10.9.0.1")  # the same quota
        with pytest.raises(Throttled, match="from this address") as err:
            await acc.register(email="reg9@example.com", password=STRONG, client_ip="10.9.0.1")
        assert err.value.status == 429 and 0 < err.value.retry_after <= 20
        # A weak password is not even estimated: the throttle answers first, no Argon2 work.
        with pytest.raises(Throttled):
            await acc.register(email="reg9@example.com", password="password", client_ip="10.9.0.1")
        with pytest.raises(Throttled):
            await acc.request_password_reset("reg1@example.com", client_ip="10.9.0.1")
        assert hashes() == 2
        assert await acc._db.user_by_email("reg9@example.com") is None
        # Another client is not affected; the first may go on after the wait.
        await acc.register(email="other@example.com", password=STRONG, client_ip="10.9.0.2")
        clock.advance(err.value.retry_after)
        await acc.register(email="reg9@example.com", password=STRONG, client_ip="10.9.0.1")
        assert hashes() == 4
    finally:
        await core.close()


def _count_hashing(acc: object) -> object:
    """Count the hasher's Argon2 calls (hash, verify, dummy verify) from now on."""
    hasher = acc.hasher  # type: ignore[attr-defined]
    calls = [0]
    original = hasher._run

    async def counting(fn: object) -> object:
        calls[0] += 1
        return await original(fn)

    hasher._run = counting
    return lambda: calls[0]


async def test_sessions_many_devices_list_end_one_end_others_end_all(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    laptop = await registered_user(acore, "henry@example.com")
    clock.advance(1)
    phone = await acc.sign_in(email="henry@example.com", password=STRONG, client_ip="10.1.1.1", user_agent=CHROME_MAC)
    clock.advance(1)
    tablet = await acc.sign_in(email="henry@example.com", password=STRONG, user_agent=None)
    assert isinstance(phone, SignedIn) and isinstance(tablet, SignedIn)
    assert len({laptop.token, phone.token, tablet.token}) == 3  # a new token at every sign-in
    me = actor_of(laptop, acore)
    sessions = await acc.list_sessions(me)
    assert [s.device for s in sessions] == ["Firefox on Linux", "Chrome on Mac OS X", "Unknown device"]
    assert sessions[1].client_ip == "10.1.1.1"
    assert all(s.expires_at == s.created_at + 30 * 86400 for s in sessions)

    await acc.end_session(me, phone.session.id)
    assert await acc.authenticate_session(phone.token) is None  # refused on its very next request
    assert await acc.end_sessions(me, keep=laptop.session.id) == 1  # log out all other devices
    assert await acc.authenticate_session(tablet.token) is None
    assert await acc.authenticate_session(laptop.token) is not None
    assert await acc.end_sessions(me) == 1  # log out all devices
    assert await acc.authenticate_session(laptop.token) is None
    events = [e.event for e in await acc.audit_events(INSTANCE, user_id=laptop.user.id)]
    assert events.count("session_ended") == 3 and events.count("sign_in") == 3


async def test_sessions_expire_after_30_days_and_are_touched_once_a_minute(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    signed = await registered_user(acore, "iris@example.com")
    clock.advance(30)
    info = await acc.authenticate_session(signed.token)
    assert info is not None and info.session.last_seen_at == signed.session.created_at
    clock.advance(31)
    info = await acc.authenticate_session(signed.token)
    assert info is not None and info.session.last_seen_at == clock.unix
    [stored] = await acc.list_sessions(info.actor)
    assert stored.last_seen_at == clock.unix
    clock.advance(30 * 86400 - 61)
    assert await acc.authenticate_session(signed.token) is None
    assert await acc.prune() == 1  # the monitor's hourly prune deletes expired sessions and tokens
    assert await acc.prune() == 0
    assert await acc.authenticate_session("ars_" + "A" * 43) is None
    assert await acc.authenticate_session(None) is None
    assert await acc.authenticate_session("sk-ar-not-a-session") is None


async def test_sign_out_ends_only_this_session(acore: Core) -> None:
    acc = service(acore)
    one = await registered_user(acore, "jack@example.com")
    two = await acc.sign_in(email="jack@example.com", password=STRONG)
    assert isinstance(two, SignedIn)
    assert await acc.sign_out(one.token)
    assert not await acc.sign_out(one.token)
    assert await acc.authenticate_session(one.token) is None
    assert await acc.authenticate_session(two.token) is not None


async def test_password_change_offers_to_end_the_other_sessions(acore: Core, data_dir: Path) -> None:
    acc = service(acore)
    here = await registered_user(acore, "kate@example.com")
    there = await acc.sign_in(email="kate@example.com", password=STRONG)
    assert isinstance(there, SignedIn)
    me = actor_of(here, acore)
    with pytest.raises(InvalidCredentials):
        await acc.change_password(me, current="Wrong-Pass-77", new=OTHER_STRONG)
    with pytest.raises(WeakPassword):
        await acc.change_password(me, current=STRONG, new="password")
    ended = await acc.change_password(
        me, current=STRONG, new=OTHER_STRONG, end_other_sessions=True, current_session=here.session.id
    )
    assert ended == 1
    assert await acc.authenticate_session(here.token) is not None
    assert await acc.authenticate_session(there.token) is None
    with pytest.raises(InvalidCredentials):
        await acc.sign_in(email="kate@example.com", password=STRONG)
    assert isinstance(await acc.sign_in(email="kate@example.com", password=OTHER_STRONG), SignedIn)
    await acc.mailer.drain()
    assert "password was changed" in mails_to(outbox(data_dir), "kate@example.com")[-1]["Subject"]


async def test_password_reset_is_single_use_short_lived_and_ends_every_session(
    acore: Core, data_dir: Path, clock: FakeClock
) -> None:
    acc = service(acore)
    signed = await registered_user(acore, "liam@example.com")
    await acc.request_password_reset("LIAM@example.com")
    await acc.request_password_reset("nobody@example.com")  # same answer, nothing sent
    await acc.mailer.drain()
    [mail] = outbox(data_dir)
    assert mail["To"] == "liam@example.com" and "Reset" in mail["Subject"]
    token = token_in(mail)
    with pytest.raises(WeakPassword):
        await acc.reset_password(token, "weak")
    user = await acc.reset_password(token, OTHER_STRONG)  # the link survived the weak attempt
    assert user.email_verified
    assert await acc.authenticate_session(signed.token) is None
    with pytest.raises(InvalidToken):
        await acc.reset_password(token, "Another-Good-Pass-93")
    assert isinstance(await acc.sign_in(email="liam@example.com", password=OTHER_STRONG), SignedIn)

    await acc.request_password_reset("liam@example.com")
    await acc.mailer.drain()
    late = token_in(outbox(data_dir)[-1])
    clock.advance(30 * 60 + 1)
    with pytest.raises(InvalidToken):
        await acc.reset_password(late, "Another-Good-Pass-93")
    events = {e.event for e in await acc.audit_events(INSTANCE, user_id=user.id)}
    assert {"password_reset", "session_ended"} <= events


async def test_first_admin_setup_link_works_once_and_only_while_there_is_no_user(acore: Core) -> None:
    acc = service(acore)
    stale = await acc.prepare_setup()
    link = await acc.prepare_setup()  # a restart: the old link stops working
    assert stale is not None and link is not None and link.startswith("http://127.0.0.1:8080/setup?token=")
    token = link.rpartition("token=")[2]
    with pytest.raises(InvalidToken):
        await acc.setup_admin(token=stale.rpartition("token=")[2], email="root@example.com", password=STRONG)
    signed = await acc.setup_admin(token=token, email="root@example.com", password=STRONG, user_agent=FIREFOX)
    assert signed.user.role == "admin" and signed.user.email_verified
    assert signed.session.method == "setup"
    with pytest.raises(InvalidToken):
        await acc.setup_admin(token=token, email="second@example.com", password=STRONG)
    assert await acc.prepare_setup() is None


async def test_registration_modes(data_dir: Path, clock: FakeClock, store_url: str | None) -> None:
    core = await accounts_core(data_dir, clock, store_url=store_url, AGENTROUTER_ACCOUNTS_REGISTRATION="invite")
    try:
        acc = service(core)
        with pytest.raises(RegistrationClosed, match="invitation"):
            await acc.register(email="mia@example.com", password=STRONG)
        admin = await registered_user(core, "admin@example.com")
        await acc.set_role(INSTANCE, admin.user.id, "admin")
        admin_actor = actor_of(await _signed_again(core, "admin@example.com"), core)
        member = await registered_user(core, "member@example.com")
        with pytest.raises(PermissionDenied):
            await acc.create_invitation(actor_of(member, core))

        bound = await acc.create_invitation(admin_actor, email="Mia@Example.com")
        assert bound.link.startswith("http://127.0.0.1:8080/register?token=")
        with pytest.raises(RegistrationClosed, match="another email"):
            await acc.register(email="notmia@example.com", password=STRONG, invitation=bound.token)
        await acc.register(email="mia@example.com", password=STRONG, invitation=bound.token)
        with pytest.raises(InvalidToken):
            await acc.register(email="mia2@example.com", password=STRONG, invitation=bound.token)
        [used] = [i for i in await acc.list_invitations(admin_actor) if i.id == bound.invitation.id]
        mia = await acc.find_user(INSTANCE, "mia@example.com")
        assert used.used_by == mia.id

        open_invite = await acc.create_invitation(admin_actor, role="admin", days=1)
        clock.advance(86400 + 1)
        with pytest.raises(InvalidToken):
            await acc.register(email="late@example.com", password=STRONG, invitation=open_invite.token)
        fresh = await acc.create_invitation(admin_actor, role="admin")
        await acc.register(email="noah@example.com", password=STRONG, invitation=fresh.token)
        assert (await acc.find_user(INSTANCE, "noah@example.com")).role == "admin"
    finally:
        await core.close()
    core = await accounts_core(
        data_dir,
        clock,
        store_url=store_url,
        AGENTROUTER_ACCOUNTS_REGISTRATION="domains",
        AGENTROUTER_ACCOUNTS_REGISTRATION_DOMAINS="Corp.example",
    )
    try:
        acc = service(core)
        await acc.register(email="olivia@CORP.example", password=STRONG)
        with pytest.raises(RegistrationClosed, match=r"corp\.example"):
            await acc.register(email="olivia@sub.corp.example", password=STRONG)
    finally:
        await core.close()


async def _signed_again(core: Core, email_: str) -> SignedIn:
    result = await service(core).sign_in(email=email_, password=STRONG)
    assert isinstance(result, SignedIn)
    return result


async def test_disabling_a_user_ends_sessions_and_their_keys_stop_working(acore: Core) -> None:
    acc = service(acore)
    signed = await registered_user(acore, "paul@example.com")
    me = actor_of(signed, acore)
    key = await acore.keys.create(name="mine", actor=me)
    instance_key = await acore.keys.create(name="instance")
    table = acore.new_table()
    await acore.load_table(table)
    assert table.authenticate(key.key)[0] == AUTH_OK

    with pytest.raises(PermissionDenied):
        await acc.set_disabled(me, signed.user.id, True)
    user = await acc.set_disabled(INSTANCE, signed.user.id, True)
    assert user.disabled
    assert await acc.authenticate_session(signed.token) is None
    # Refused at once through the shared revoked flag, before any reload of the table.
    assert table.authenticate(key.key)[0] == AUTH_REVOKED
    assert table.authenticate(instance_key.key)[0] == AUTH_OK
    with pytest.raises(AccountDisabled):
        await acc.sign_in(email="paul@example.com", password=STRONG)
    with pytest.raises(InvalidCredentials):
        await acc.sign_in(email="paul@example.com", password=OTHER_STRONG)  # the password first

    await acc.set_disabled(INSTANCE, signed.user.id, False)
    assert isinstance(await acc.sign_in(email="paul@example.com", password=STRONG), SignedIn)
    assert (await acore.keys.get(key.row.id)).state == "deleted"  # keys stay deleted
    events = [e.event for e in await acc.audit_events(INSTANCE, user_id=signed.user.id)]
    assert {"user_disabled", "user_enabled", "key_deleted", "key_created"} <= set(events)


async def test_deleting_a_user_revokes_their_keys(acore: Core) -> None:
    acc = service(acore)
    signed = await registered_user(acore, "quinn@example.com")
    key = await acore.keys.create(name="q", actor=actor_of(signed, acore))
    table = acore.new_table()
    await acore.load_table(table)
    await acc.delete_user(INSTANCE, signed.user.id)
    assert table.authenticate(key.key)[0] == AUTH_REVOKED
    row = await acore.keys.get(key.row.id)
    assert row.state == "deleted" and row.owner is None
    assert await acc.authenticate_session(signed.token) is None
    assert [e.event for e in await acc.audit_events(INSTANCE, event="user_deleted")] == ["user_deleted"]


async def test_the_last_admin_stays(acore: Core) -> None:
    acc = service(acore)
    admin = await registered_user(acore, "root@example.com")
    await acc.set_role(INSTANCE, admin.user.id, "admin")
    with pytest.raises(Conflict, match="last admin"):
        await acc.set_role(INSTANCE, admin.user.id, "member")
    with pytest.raises(Conflict, match="last admin"):
        await acc.set_disabled(INSTANCE, admin.user.id, True)
    with pytest.raises(Conflict, match="last admin"):
        await acc.delete_user(INSTANCE, admin.user.id)


async def test_rehash_on_sign_in_when_parameters_rise(data_dir: Path, clock: FakeClock, store_url: str | None) -> None:
    core = await accounts_core(data_dir, clock, store_url=store_url)
    try:
        await service(core).create_user(INSTANCE, email="rita@example.com", password=STRONG)
        before = (await service(core).find_user(INSTANCE, "rita@example.com")).password_hash
        assert before is not None and "t=3" in before
    finally:
        await core.close()
    core = await accounts_core(data_dir, clock, store_url=store_url, AGENTROUTER_ACCOUNTS_PASSWORD_TIME_COST="4")
    try:
        assert isinstance(await service(core).sign_in(email="rita@example.com", password=STRONG), SignedIn)
        after = (await service(core).find_user(INSTANCE, "rita@example.com")).password_hash
        assert after is not None and "t=4" in after and after != before
    finally:
        await core.close()


async def test_audit_never_holds_a_secret(acore: Core, data_dir: Path) -> None:
    acc = service(acore)
    await acc.register(email="sam@example.com", password=STRONG)
    with pytest.raises(InvalidCredentials):
        await acc.sign_in(email="sam@example.com", password=OTHER_STRONG)
    signed = await acc.sign_in(email="sam@example.com", password=STRONG)
    assert isinstance(signed, SignedIn)
    await acc.request_password_reset("sam@example.com")
    await acc.mailer.drain()
    tokens = [token_in(m) for m in outbox(data_dir)]
    text = repr(await acc.audit_events(INSTANCE))
    for secret in (STRONG, OTHER_STRONG, signed.token, *tokens):
        assert secret not in text
    stored = await stored_text(acore)
    assert "sam@example.com" in stored  # the dump does hold the rows
    for secret in (STRONG, OTHER_STRONG, signed.token, *tokens):
        assert secret not in stored
