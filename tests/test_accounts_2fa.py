"""Two-factor sign-in (TOTP with pyotp's own codes, recovery codes) and OAuth
identities at the service level, on a real SQLite file and the fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest

from agentrouter._core import FakeClock
from agentrouter.accounts.errors import (
    AccountDisabled,
    AccountNotFound,
    Conflict,
    IdentityConflict,
    IdentityNotLinked,
    InvalidSecondFactor,
    LastSignInMethod,
    RegistrationClosed,
)
from agentrouter.accounts.service import SecondFactorRequired, SignedIn
from agentrouter.actor import INSTANCE
from agentrouter.core import Core
from tests.accounts_helpers import STRONG, accounts_core, actor_of, registered_user, service, stored_text

pytestmark = pytest.mark.store_backends


@pytest.fixture
async def acore(data_dir: Path, clock: FakeClock, store_url: str | None) -> AsyncIterator[Core]:
    core = await accounts_core(data_dir, clock, store_url=store_url)
    try:
        yield core
    finally:
        await core.close()


async def _enrolled(core: Core, clock: FakeClock, email: str) -> tuple[SignedIn, pyotp.TOTP, list[str]]:
    acc = service(core)
    signed = await registered_user(core, email)
    me = actor_of(signed, core)
    enrollment = await acc.begin_totp(me)
    assert enrollment.uri.startswith("otpauth://totp/AgentRouter:") and enrollment.secret in enrollment.uri
    totp = pyotp.TOTP(enrollment.secret)
    with pytest.raises(InvalidSecondFactor):
        await acc.confirm_totp(me, "000000" if totp.at(clock.unix) != "000000" else "111111")
    codes = await acc.confirm_totp(me, totp.at(clock.unix))
    assert len(codes) == 10 and len(set(codes)) == 10
    clock.advance(30)  # the next step: the enrolment's code is used up
    return signed, totp, codes


async def test_totp_sign_in_needs_the_code_and_refuses_replays(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    signed, totp, _codes = await _enrolled(acore, clock, "tina@example.com")
    result = await acc.sign_in(email="tina@example.com", password=STRONG, client_ip="10.0.0.9")
    assert isinstance(result, SecondFactorRequired) and result.method == "password"
    code = totp.at(clock.unix)
    valid = {totp.at(clock.unix + d) for d in (-30, 0, 30)}
    wrong = next(c for c in ("123456", "654321", "111111", "222222") if c not in valid)
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=result.pending_token, code=wrong)
    done = await acc.complete_sign_in(pending_token=result.pending_token, code=code, client_ip="10.0.0.9")
    assert done.session.method == "password+totp"
    # The pending sign-in is used up, and so is the code (same step, another sign-in).
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=result.pending_token, code=code)
    again = await acc.sign_in(email="tina@example.com", password=STRONG)
    assert isinstance(again, SecondFactorRequired)
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=again.pending_token, code=code)
    # A code of the next step is fine too (a fast clock on the phone); after it, no
    # code of an earlier step is accepted.
    ahead = totp.at(clock.unix + 30)
    fresh = await acc.complete_sign_in(pending_token=again.pending_token, code=ahead)
    assert fresh.user.id == signed.user.id
    clock.advance(30)
    third = await acc.sign_in(email="tina@example.com", password=STRONG)
    assert isinstance(third, SecondFactorRequired)
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=third.pending_token, code=ahead)
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=third.pending_token, code=totp.at(clock.unix - 30))
    events = [(e.event, e.method) for e in await acc.audit_events(INSTANCE, user_id=signed.user.id)]
    assert ("totp_enabled", None) in events and ("sign_in_failed", "password+code") in events


async def test_pending_sign_in_expires(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    _signed, totp, _codes = await _enrolled(acore, clock, "uma@example.com")
    result = await acc.sign_in(email="uma@example.com", password=STRONG)
    assert isinstance(result, SecondFactorRequired)
    clock.advance(5 * 60 + 1)
    with pytest.raises(InvalidSecondFactor, match="expired"):
        await acc.complete_sign_in(pending_token=result.pending_token, code=totp.at(clock.unix))


async def test_recovery_codes_work_once_and_can_be_renewed(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    signed, totp, codes = await _enrolled(acore, clock, "vera@example.com")
    me = actor_of(signed, acore)
    result = await acc.sign_in(email="vera@example.com", password=STRONG)
    assert isinstance(result, SecondFactorRequired)
    done = await acc.complete_sign_in(pending_token=result.pending_token, code=codes[0].upper())
    assert done.session.method == "password+recovery_code"
    assert await acc.recovery_codes_left(me) == 9
    result = await acc.sign_in(email="vera@example.com", password=STRONG)
    assert isinstance(result, SecondFactorRequired)
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=result.pending_token, code=codes[0])
    renewed = await acc.renew_recovery_codes(me, totp.at(clock.unix))
    with pytest.raises(InvalidSecondFactor):
        await acc.complete_sign_in(pending_token=result.pending_token, code=codes[1])  # old codes are gone
    await acc.complete_sign_in(pending_token=result.pending_token, code=renewed[0])


async def test_disabling_totp_needs_a_code_unless_an_admin_does_it(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    signed, _totp, codes = await _enrolled(acore, clock, "will@example.com")
    me = actor_of(signed, acore)
    with pytest.raises(Conflict):
        await acc.begin_totp(me)
    with pytest.raises(InvalidSecondFactor):
        await acc.disable_totp(me, code="000000")
    await acc.disable_totp(me, code=codes[3])
    assert isinstance(await acc.sign_in(email="will@example.com", password=STRONG), SignedIn)
    # Locked out: an admin turns it off for them.
    enrollment = await acc.begin_totp(me)
    await acc.confirm_totp(me, pyotp.TOTP(enrollment.secret).at(clock.unix))
    await acc.disable_totp(INSTANCE, user_id=signed.user.id)
    assert isinstance(await acc.sign_in(email="will@example.com", password=STRONG), SignedIn)


async def test_totp_secrets_are_sealed_in_the_store(acore: Core, clock: FakeClock, data_dir: Path) -> None:
    acc = service(acore)
    signed = await registered_user(acore, "xena@example.com")
    enrollment = await acc.begin_totp(actor_of(signed, acore))
    stored = await stored_text(acore)
    assert "xena@example.com" in stored
    assert enrollment.secret not in stored
    user = await acc.get_user(INSTANCE, signed.user.id)
    assert user.totp_secret is not None and enrollment.secret.encode() not in user.totp_secret


# -- OAuth identities ----------------------------------------------------------------


async def test_identity_sign_in_creates_then_finds_the_user(acore: Core) -> None:
    acc = service(acore)
    first = await acc.sign_in_with_identity(
        provider="github", subject="12345", email="Yan@Example.com", email_verified=True, display_name="Yan"
    )
    assert isinstance(first, SignedIn) and first.session.method == "github"
    assert first.user.email_verified and first.user.password_hash is None
    # The same subject signs the same user in, whatever address the provider now gives.
    again = await acc.sign_in_with_identity(
        provider="github", subject=12345, email="other@example.com", email_verified=True
    )
    assert isinstance(again, SignedIn) and again.user.id == first.user.id
    # Another provider's subject with the same number is another identity.
    google = await acc.sign_in_with_identity(
        provider="google", subject="12345", email="yan@example.com", email_verified=True
    )
    assert isinstance(google, SignedIn) and google.user.id == first.user.id  # linked by the verified address
    me = actor_of(first, acore)
    assert {(i.provider, i.subject) for i in await acc.list_identities(me)} == {
        ("github", "12345"),
        ("google", "12345"),
    }


async def test_identity_links_to_an_existing_account_only_when_both_addresses_are_verified(acore: Core) -> None:
    acc = service(acore)
    await acc.register(email="zoe@example.com", password=STRONG)  # unverified
    with pytest.raises(IdentityNotLinked, match="link GitHub from your account settings"):
        await acc.sign_in_with_identity(provider="github", subject="1", email="zoe@example.com", email_verified=True)
    with pytest.raises(RegistrationClosed, match="no verified email"):
        await acc.sign_in_with_identity(provider="github", subject="2", email="zoe@example.com", email_verified=False)
    assert len(await acc.list_users(INSTANCE)) == 1  # nothing created
    verified = await registered_user(acore, "adam@example.com")
    linked = await acc.sign_in_with_identity(
        provider="google", subject="g-adam", email="ADAM@example.com", email_verified=True
    )
    assert isinstance(linked, SignedIn) and linked.user.id == verified.user.id


async def test_identity_sign_in_asks_for_the_second_factor(acore: Core, clock: FakeClock) -> None:
    acc = service(acore)
    signed, totp, _codes = await _enrolled(acore, clock, "bea@example.com")
    await acc.link_identity(actor_of(signed, acore), provider="github", subject="77", email="bea@example.com")
    result = await acc.sign_in_with_identity(provider="github", subject="77", email=None, email_verified=False)
    assert isinstance(result, SecondFactorRequired) and result.method == "github"
    done = await acc.complete_sign_in(pending_token=result.pending_token, code=totp.at(clock.unix))
    assert done.session.method == "github+totp"


async def test_link_and_unlink_but_never_the_last_way_in(acore: Core) -> None:
    acc = service(acore)
    oauth_only = await acc.sign_in_with_identity(
        provider="github", subject="9", email="cleo@example.com", email_verified=True
    )
    assert isinstance(oauth_only, SignedIn)
    me = actor_of(oauth_only, acore)
    with pytest.raises(LastSignInMethod):
        await acc.unlink_identity(me, provider="github", subject="9")
    await acc.link_identity(me, provider="google", subject="g9")
    other = await registered_user(acore, "dan@example.com")
    with pytest.raises(IdentityConflict):
        await acc.link_identity(actor_of(other, acore), provider="google", subject="g9")
    with pytest.raises(AccountNotFound):
        await acc.unlink_identity(actor_of(other, acore), provider="google", subject="g9")
    await acc.unlink_identity(me, provider="github", subject="9")
    with pytest.raises(LastSignInMethod):
        await acc.unlink_identity(me, provider="google", subject="g9")
    # Adding a password makes the last identity removable.
    await acc.change_password(me, current=None, new=STRONG)
    await acc.unlink_identity(me, provider="google", subject="g9")
    assert isinstance(await acc.sign_in(email="cleo@example.com", password=STRONG), SignedIn)


async def test_identity_of_a_disabled_user_is_refused(acore: Core) -> None:
    acc = service(acore)
    signed = await acc.sign_in_with_identity(
        provider="google", subject="s", email="eli@example.com", email_verified=True
    )
    assert isinstance(signed, SignedIn)
    await acc.set_disabled(INSTANCE, signed.user.id, True)
    with pytest.raises(AccountDisabled):
        await acc.sign_in_with_identity(provider="google", subject="s", email="eli@example.com", email_verified=True)


async def test_identity_sign_up_follows_the_registration_mode(
    data_dir: Path, clock: FakeClock, store_url: str | None
) -> None:
    core = await accounts_core(data_dir, clock, store_url=store_url, AGENTROUTER_ACCOUNTS_REGISTRATION="invite")
    try:
        acc = service(core)
        with pytest.raises(RegistrationClosed):
            await acc.sign_in_with_identity(
                provider="github", subject="5", email="fay@example.com", email_verified=True
            )
        invite = await acc.create_invitation(INSTANCE, email="fay@example.com")
        signed = await acc.sign_in_with_identity(
            provider="github", subject="5", email="fay@example.com", email_verified=True, invitation=invite.token
        )
        assert isinstance(signed, SignedIn)
    finally:
        await core.close()
