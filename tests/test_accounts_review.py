"""Edge cases found by a review of the accounts work: odd input that must get a 4xx
in the API's dialect and change nothing (never a 500), on both store backends; the
management API in-process (``tests.gateway_fixtures.call``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pyotp
import pytest

from agentrouter._core import FakeClock
from agentrouter.actor import INSTANCE
from agentrouter.api import build_api
from agentrouter.api.app import ManagementApi
from agentrouter.config import Settings
from agentrouter.core import Core
from tests.accounts_web import STRONG
from tests.conftest import settings_on
from tests.gateway_fixtures import Reply, call

pytestmark = pytest.mark.store_backends

PUBLIC = "http://gateway.example.com"
EMAIL = "review@example.com"


@pytest.fixture
def settings(data_dir: Path, store_url: str | None) -> Settings:
    return settings_on(
        data_dir, store_url=store_url, AGENTROUTER_PUBLIC_URL=PUBLIC, AGENTROUTER_ACCOUNTS_REGISTRATION="open"
    )


@pytest.fixture
async def core(settings: Settings, clock: FakeClock) -> AsyncIterator[Core]:
    core = await Core.from_settings(settings, clock=clock)
    try:
        yield core
    finally:
        await core.close()


@pytest.fixture
async def api(core: Core, settings: Settings) -> AsyncIterator[ManagementApi]:
    assert core.accounts is not None
    await core.accounts.create_user(INSTANCE, email=EMAIL, password=STRONG)
    app = build_api(core, settings=settings, run_monitor=False)
    try:
        yield app
    finally:
        await app.shutdown()


class Session:
    def __init__(self, api: ManagementApi, cookie: str, csrf: str | None) -> None:
        self.api, self.cookie, self.csrf = api, cookie, csrf

    async def __call__(
        self, method: str, path: str, body: Any = None, *, csrf: bool = True, query: bytes = b""
    ) -> Reply:
        headers = {"origin": PUBLIC, "cookie": self.cookie}
        if csrf and self.csrf is not None:
            headers["x-csrf-token"] = self.csrf
        raw = b""
        if body is not None:
            headers["content-type"] = "application/json"
            raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        return await call(self.api, method, path, headers=headers, body=raw, query=query)


async def sign_in(api: ManagementApi, email: str = EMAIL, password: str = STRONG) -> tuple[Session, dict[str, Any]]:
    reply = await call(
        api,
        "POST",
        "/api/v1/auth/signin",
        headers={"content-type": "application/json", "origin": PUBLIC},
        body=msgspec.json.encode({"email": email, "password": password}),
    )
    assert reply.status == 200, reply.body
    cookie = next(
        (v.decode().split(";")[0] for k, v in reply.raw_headers if k == b"set-cookie" and b"agentrouter_session=" in v),
        "",
    )
    body = reply.json()
    return Session(api, cookie, body.get("csrf_token")), body


def error_of(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    err: dict[str, Any] = reply.json()["error"]
    return err


NON_ASCII_CODES = ("١٢٣٤٥٦", "１２３４５６", "12345٦")
"""Six characters that ``str.isdigit`` calls digits but that are not ASCII."""


async def test_a_code_of_non_ascii_digits_is_a_wrong_code_not_a_500(api: ManagementApi, core: Core) -> None:
    me, _ = await sign_in(api)
    enrol = await me("POST", "/api/v1/me/totp")
    assert enrol.status == 200, enrol.body
    secret = enrol.json()["secret"]
    for code in NON_ASCII_CODES:  # enrolment not confirmed by them
        error_of(await me("POST", "/api/v1/me/totp/confirm", {"code": code}), 401)
    assert (await me("GET", "/api/v1/me")).json()["two_factor_enabled"] is False
    ok = await me("POST", "/api/v1/me/totp/confirm", {"code": pyotp.TOTP(secret).at(core.now())})
    assert ok.status == 200, ok.body
    for path in ("/api/v1/me/totp/disable", "/api/v1/me/totp/recovery-codes"):
        for code in NON_ASCII_CODES:
            error_of(await me("POST", path, {"code": code}), 401)
    assert (await me("GET", "/api/v1/me")).json()["two_factor_enabled"] is True

    _, pending = await sign_in(api)
    assert pending["status"] == "two_factor_required"
    for code in NON_ASCII_CODES:
        reply = await call(
            api,
            "POST",
            "/api/v1/auth/signin/two-factor",
            headers={"content-type": "application/json", "origin": PUBLIC},
            body=msgspec.json.encode({"code": code, "two_factor_token": pending["two_factor_token"]}),
        )
        assert error_of(reply, 401)["field"] == "code"


async def test_a_nul_in_an_id_a_query_or_a_display_name_is_a_4xx_on_every_backend(
    api: ManagementApi, core: Core
) -> None:
    # PostgreSQL text cannot hold a NUL: asking for one must not reach the database as a 500.
    assert core.accounts is not None
    admin_row, _ = await core.accounts.create_user(INSTANCE, email="root@example.com", password=STRONG, role="admin")
    admin, _ = await sign_in(api, "root@example.com")
    me, _ = await sign_in(api)
    for method, path in (
        ("GET", "/api/v1/users/usr_\x00"),
        ("PATCH", "/api/v1/users/usr_\x00"),
        ("DELETE", "/api/v1/users/usr_\x00"),
        ("DELETE", "/api/v1/invitations/inv_\x00"),
        ("GET", "/api/v1/keys/key_\x00"),
        ("GET", "/api/v1/keys/key_\x00/usage"),
        ("GET", "/api/v1/alerts/alt_\x00"),
    ):
        body = {"role": "member"} if method == "PATCH" else None
        error_of(await admin(method, path, body), 404)
    for method, path in (("DELETE", "/api/v1/me/sessions/ses_\x00"), ("DELETE", "/api/v1/me/identities/github:\x00")):
        error_of(await me(method, path), 404)
    for query in (b"user_id=usr_%00", b"event=sign_in%00", b"since=1%00"):
        assert error_of(await admin("GET", "/api/v1/audit", query=query), 422)["field"] in ("user_id", "event", "since")
    for query in (b"key_id=key_%00", b"owner=usr_%00"):
        error_of(await admin("GET", "/api/v1/usage", query=query), 422)
    error_of(await admin("GET", "/api/v1/keys", query=b"label=env%3D%00"), 422)

    err = error_of(await me("PATCH", "/api/v1/me", {"display_name": "Ada\x00Lovelace"}), 422)
    assert err["field"] == "display_name"
    assert (await me("GET", "/api/v1/me")).json()["display_name"] is None
    assert (await admin("GET", f"/api/v1/users/{admin_row.id}")).status == 200


async def test_no_key_is_made_for_a_disabled_owner(core: Core) -> None:
    # A disabled user's keys stop working; a key made for them afterwards must not work either.
    from agentrouter.keys import KeyInputError

    assert core.accounts is not None
    user, _ = await core.accounts.create_user(INSTANCE, email="gone@example.com", password=STRONG)
    await core.accounts.set_disabled(INSTANCE, user.id, True)
    with pytest.raises(KeyInputError, match="disabled"):
        await core.keys.create(name="for a disabled user", owner=user.id)
    assert await core.keys.list(owner=user.id, include_deleted=True) == []


async def test_a_key_made_while_its_owner_is_disabled_does_not_survive(core: Core) -> None:
    """The owner check is part of the key's insert transaction: a key whose owner was
    disabled (or deleted) after the caller was authenticated — the window between
    ``KeyService.create``'s checks and the insert — is refused, never made."""
    from agentrouter.actor import Actor
    from agentrouter.keys import KeyInputError

    assert core.accounts is not None
    user, _ = await core.accounts.create_user(INSTANCE, email="racing@example.com", password=STRONG)
    # The member's request was authenticated while they were enabled...
    actor = Actor(kind="user", user_id=user.id, role="member", email_verified=True, via="session")
    # ...then an admin disabled them, before the insert.
    assert await core.store.accounts.set_disabled(user.id, True)
    with pytest.raises(KeyInputError, match="disabled"):
        await core.keys.create(name="made in the window", actor=actor)
    assert await core.keys.list(owner=user.id, include_deleted=True) == []
    # The same for an admin naming the owner, once the pre-check has passed.
    await core.store.accounts.set_disabled(user.id, False)
    real_get_user = core.store.accounts.get_user

    async def enabled_then_disabled(user_id: str) -> object:
        row = await real_get_user(user_id)
        await core.store.accounts.set_disabled(user_id, True)  # the concurrent disable
        return row

    core.store.accounts.get_user = enabled_then_disabled  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyInputError, match="disabled"):
            await core.keys.create(name="for them", owner=user.id)
    finally:
        del core.store.accounts.get_user
    assert await core.keys.list(owner=user.id, include_deleted=True) == []
    # A deleted owner: gone by the insert.
    assert await core.store.accounts.delete_user(user.id)
    with pytest.raises(KeyInputError, match="no user"):
        await core.keys.create(name="for nobody", actor=actor)
    assert [k for k in await core.keys.list(include_deleted=True) if k.name == "for nobody"] == []


async def test_a_refused_user_update_changes_nothing(api: ManagementApi, core: Core) -> None:
    assert core.accounts is not None
    one, _ = await core.accounts.create_user(INSTANCE, email="one@example.com", password=STRONG, role="admin")
    await core.accounts.create_user(INSTANCE, email="two@example.com", password=STRONG, role="admin")
    admin, _ = await sign_in(api, "one@example.com")
    err = error_of(await admin("PATCH", f"/api/v1/users/{one.id}", {"role": "member", "disabled": True}), 409)
    assert "own account" in err["message"]
    after = await core.accounts.get_user(INSTANCE, one.id)
    assert (after.role, after.disabled) == ("admin", False)


async def test_the_audit_log_honours_until(api: ManagementApi, core: Core, clock: FakeClock) -> None:
    # `until` is in the OpenAPI document of GET /api/v1/audit: events at or after it are left out.
    me, _ = await sign_in(api)  # sign_in at t0
    t0 = core.now()
    clock.advance(3600)
    await sign_in(api)  # another an hour later
    everything = (await me("GET", "/api/v1/audit", query=b"event=sign_in")).json()["data"]
    assert len(everything) == 2
    before = (await me("GET", "/api/v1/audit", query=f"event=sign_in&until={t0 + 60:.0f}".encode())).json()["data"]
    assert [e["time"] for e in before] == [t0]
    error_of(await me("GET", "/api/v1/audit", query=b"until=soon"), 422)


async def test_sign_out_and_a_resend_of_ones_own_link_need_the_csrf_token(api: ManagementApi, core: Core) -> None:
    # State-changing requests with a session cookie need the CSRF token, public routes too
    # when they act on the cookie's session.
    assert core.accounts is not None
    await core.accounts.create_user(INSTANCE, email="fresh@example.com", password=STRONG, verified=False)
    me, _ = await sign_in(api, "fresh@example.com")
    for path in ("/api/v1/auth/signout", "/api/v1/auth/verify/resend"):
        for wrong in (None, "not-the-token"):
            headers = {"origin": PUBLIC, "cookie": me.cookie, "content-type": "application/json"}
            if wrong is not None:
                headers["x-csrf-token"] = wrong
            refused = await call(api, "POST", path, headers=headers, body=b"{}")
            assert error_of(refused, 403)["code"] == "csrf_failed"
    assert (await me("GET", "/api/v1/me")).status == 200  # still signed in
    assert (await me("POST", "/api/v1/auth/verify/resend", {})).status == 202
    assert (await me("POST", "/api/v1/auth/signout")).status == 200
    assert (await me("GET", "/api/v1/me")).status == 401
