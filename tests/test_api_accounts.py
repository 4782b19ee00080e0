"""The account routes and the session cookie over real HTTP: ``agentrouter serve
--workers 2`` on loopback, browsers that keep cookies and send ``Origin`` and the CSRF
token, manage keys made on the same data directory.

Sessions: cookie flags, a new token at every sign-in (no fixation), an ended session
refused on the very next request on every worker (end one, end all, end others, sign
out), CSRF refusals (no token, a wrong one, another origin), a manage key needing
none. Object-level authorization: a member cannot read, change or delete another
member's keys, sessions, usage, alerts or audit events — 404, never 403.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest

from agentrouter.accounts.service import AccountService
from agentrouter.core import Core
from tests.accounts_helpers import outbox, token_in
from tests.accounts_web import OTHER_STRONG, STRONG, Browser, Served
from tests.api_fixtures import api_error
from tests.waiting import until_sync

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("accounts-web")
    data = tmp / "data"
    data.mkdir()
    server = Served(data, workers=2, env={"AGENTROUTER_ACCOUNTS_SIGNIN_IP_ATTEMPTS": "1000"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(served: Served) -> Iterator[Browser]:
    with served.browser() as b:
        yield b


_n = [0]


def new_email(tag: str) -> str:
    _n[0] += 1
    return f"{tag}{_n[0]}-{int(time.time() * 1000) % 100000}@example.com"


def member(served: Served, tag: str = "m") -> tuple[str, str]:
    email = new_email(tag)
    return email, served.user(email)


def signed_in(served: Served, tag: str = "m") -> tuple[Browser, str]:
    email, user_id = member(served, tag)
    b = served.browser()
    b.sign_in(email)
    return b, user_id


def set_cookie_headers(resp: httpx.Response) -> list[str]:
    return resp.headers.get_list("set-cookie")


# --------------------------------------------------------------------------- the cookie


def test_sign_in_sets_a_fresh_http_only_lax_cookie_each_time(served: Served, browser: Browser) -> None:
    email, user_id = member(served)
    planted = "ars_planted-by-someone-else-0123456789abcdef"
    browser.client.cookies.set("agentrouter_session", planted, domain="127.0.0.1")
    resp = browser.post("/api/v1/auth/signin", json={"email": email, "password": STRONG})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "signed_in" and body["user"]["id"] == user_id and body["session"]["current"]
    cookie = next(c for c in set_cookie_headers(resp) if c.startswith("agentrouter_session="))
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # plain http on loopback
    max_age = int(next(a for a in attrs if a.startswith("max-age=")).split("=")[1])
    assert abs(max_age - 30 * 86400) < 120
    assert token != planted and token.startswith("ars_") and len(token) >= 40
    assert token not in resp.text  # the token only travels in Set-Cookie
    first_csrf = body["csrf_token"]

    browser.client.cookies.clear()
    second = browser.post("/api/v1/auth/signin", json={"email": email, "password": STRONG})
    token2 = next(c for c in set_cookie_headers(second) if c.startswith("agentrouter_session="))
    assert token2.split(";")[0].split("=", 1)[1] != token  # no fixation: a new token every sign-in
    assert second.json()["csrf_token"] != first_csrf

    # The old token (another device now) still works until ended; the new one too.
    with httpx.Client(base_url=served.url, cookies={"agentrouter_session": token}) as old:
        assert old.get("/api/v1/me").status_code == 200


def test_sign_in_in_a_browser_with_a_session_ends_the_old_one(served: Served) -> None:
    email, _ = member(served)
    with served.browser() as b:
        b.sign_in(email)
        old = b.session_cookie
        b.sign_in(email)
        assert b.session_cookie != old
        with httpx.Client(base_url=served.url, cookies={"agentrouter_session": str(old)}) as stale:
            err = api_error(stale.get("/api/v1/me"), 401, "authentication_error")
            assert err["code"] == "session_ended"
        sessions = b.get("/api/v1/me/sessions").json()["data"]
        assert len(sessions) == 1 and sessions[0]["current"]


def test_whoami_and_sign_out(served: Served, browser: Browser) -> None:
    email, user_id = member(served)
    signed = browser.sign_in(email)
    me = browser.get("/api/v1/auth/session").json()
    assert me["credential"] == "session" and me["user"]["id"] == user_id
    assert me["csrf_token"] == signed["csrf_token"] and me["session"]["current"]
    # Sign-out is POST only: no state change over GET.
    assert browser.get("/api/v1/auth/signout").status_code == 405
    assert browser.get("/api/v1/me").status_code == 200
    resp = browser.post("/api/v1/auth/signout", fresh=True)
    assert resp.status_code == 200
    assert any(c.startswith("agentrouter_session=;") and "Max-Age=0" in c for c in set_cookie_headers(resp))


def test_wrong_password_and_unknown_email_answer_alike(served: Served, browser: Browser) -> None:
    email, _ = member(served)
    a = browser.post("/api/v1/auth/signin", json={"email": email, "password": "Wrong-Password-1"})
    b = browser.post("/api/v1/auth/signin", json={"email": new_email("nobody"), "password": "Wrong-Password-1"})
    ea, eb = api_error(a, 401, "authentication_error"), api_error(b, 401, "authentication_error")
    assert ea == eb and ea["code"] == "invalid_credentials"
    assert not set_cookie_headers(a)


# --------------------------------------------------------------------------- CSRF and Origin


def test_csrf_refusals_and_manage_key_needs_none(served: Served) -> None:
    b, user_id = signed_in(served)
    served.seed(lambda core, acc: _verify(acc, user_id))
    with b:
        good = b.csrf
        # Reads need no token.
        assert b.get("/api/v1/keys").status_code == 200
        # A state change without the token, with a wrong one, from another origin, without Origin.
        b.csrf = None
        assert api_error(b.post("/api/v1/keys", json={}), 403, "permission_error")["code"] == "csrf_failed"
        b.csrf = "x" * 43
        assert api_error(b.post("/api/v1/keys", json={}), 403, "permission_error")["code"] == "csrf_failed"
        b.csrf = good
        cross = b.post("/api/v1/keys", json={}, headers={"origin": "https://evil.example"})
        assert api_error(cross, 403, "permission_error")["code"] == "csrf_failed"
        null = b.post("/api/v1/keys", json={}, headers={"origin": "null"})
        assert api_error(null, 403, "permission_error")["code"] == "csrf_failed"
        no_origin = httpx.Client(base_url=served.url, cookies=b.client.cookies)
        with no_origin:
            resp = no_origin.post("/api/v1/keys", json={}, headers={"x-csrf-token": str(good)})
            assert api_error(resp, 403, "permission_error")["code"] == "csrf_failed"
            # A Referer of this site stands in for a missing Origin.
            resp = no_origin.post(
                "/api/v1/keys", json={}, headers={"x-csrf-token": str(good), "referer": served.url + "/keys"}
            )
            assert resp.status_code == 201, resp.text
        # Nothing was created by the refused requests.
        assert len(b.get("/api/v1/keys").json()["data"]) == 1
        # The right token from this origin works; so does a login-CSRF-style cross-site sign-in: refused.
        assert b.post("/api/v1/keys", json={"name": "ok"}).status_code == 201
        cross_signin = httpx.post(
            served.url + "/api/v1/auth/signin",
            json={"email": "a@example.com", "password": "x"},
            headers={"origin": "https://evil.example"},
        )
        assert api_error(cross_signin, 403, "permission_error")["code"] == "csrf_failed"

    # A manage key: no CSRF token, no Origin.
    key = served.manage_key()
    resp = httpx.post(served.url + "/api/v1/keys", json={"name": "script"}, headers={"authorization": f"Bearer {key}"})
    assert resp.status_code == 201, resp.text


async def _alert(core: Core, key_id: str) -> str:
    row = await core.store.record_alert(
        key_id=key_id, kind="new_ip", subject="10.0.0.0/24", evidence={"ip": "10.0.0.1"}, now=time.time(), cooldown=0
    )
    assert row is not None
    return row.id


async def _verify(acc: AccountService, user_id: str) -> None:
    await acc._db.update_user(user_id, {"email_verified_at": time.time()})


# --------------------------------------------------------------------------- ending sessions


def _refused_everywhere(served: Served, cookie: str, *, times: int = 6) -> None:
    """The session is refused on the very next request, on a new connection each time
    (both workers answer some of them)."""
    for _ in range(times):
        with httpx.Client(base_url=served.url, cookies={"agentrouter_session": cookie}) as c:
            err = api_error(c.get("/api/v1/me"), 401, "authentication_error")
            assert err["code"] == "session_ended"


def _works_everywhere(served: Served, cookie: str, *, times: int = 6) -> None:
    for _ in range(times):
        with httpx.Client(base_url=served.url, cookies={"agentrouter_session": cookie}) as c:
            assert c.get("/api/v1/me").status_code == 200


def test_end_one_session(served: Served) -> None:
    email, _ = member(served)
    with served.browser() as laptop, served.browser() as phone:
        laptop.sign_in(email)
        phone.sign_in(email)
        for _ in range(4):  # warm both workers with the phone's session
            assert phone.get("/api/v1/me", fresh=True).status_code == 200
        sessions = laptop.get("/api/v1/me/sessions").json()["data"]
        assert len(sessions) == 2 and sum(s["current"] for s in sessions) == 1
        assert {s["device"] for s in sessions} == {"Firefox on Linux"}
        other = next(s for s in sessions if not s["current"])
        resp = laptop.request("DELETE", f"/api/v1/me/sessions/{other['id']}")
        assert resp.status_code == 200 and resp.json() == {"ended": 1, "current_ended": False}
        _refused_everywhere(served, str(phone.session_cookie))
        _works_everywhere(served, str(laptop.session_cookie))


def test_end_others_then_end_all(served: Served) -> None:
    email, _ = member(served)
    with served.browser() as a, served.browser() as b, served.browser() as c:
        for x in (a, b, c):
            x.sign_in(email)
        resp = a.post("/api/v1/me/sessions/end-others")
        assert resp.json() == {"ended": 2, "current_ended": False}
        _refused_everywhere(served, str(b.session_cookie))
        _refused_everywhere(served, str(c.session_cookie))
        _works_everywhere(served, str(a.session_cookie))
        b.sign_in(email)
        resp = a.post("/api/v1/me/sessions/end-all")
        assert resp.json() == {"ended": 2, "current_ended": True}
        assert any("Max-Age=0" in h for h in set_cookie_headers(resp))
        _refused_everywhere(served, str(b.session_cookie))


def test_sign_out_is_refused_next_on_every_worker(served: Served) -> None:
    email, _ = member(served)
    with served.browser() as b:
        b.sign_in(email)
        cookie = str(b.session_cookie)
        _works_everywhere(served, cookie, times=4)
        assert b.post("/api/v1/auth/signout").status_code == 200
        _refused_everywhere(served, cookie)


def test_password_change_can_end_the_others(served: Served) -> None:
    email, _ = member(served)
    with served.browser() as a, served.browser() as b:
        a.sign_in(email)
        b.sign_in(email)
        wrong = a.post("/api/v1/me/password", json={"current_password": "Nope-Nope-123", "new_password": OTHER_STRONG})
        assert api_error(wrong, 401, "authentication_error", field="current_password")
        resp = a.post(
            "/api/v1/me/password",
            json={"current_password": STRONG, "new_password": OTHER_STRONG, "end_other_sessions": True},
        )
        assert resp.status_code == 200 and resp.json()["ended"] == 1, resp.text
        _refused_everywhere(served, str(b.session_cookie))
        _works_everywhere(served, str(a.session_cookie), times=2)
        b.client.cookies.clear()
        b.sign_in(email, OTHER_STRONG)


def test_disabling_a_user_ends_their_sessions_and_keys(served: Served) -> None:
    admin_email = new_email("admin")
    served.user(admin_email, role="admin")
    b, user_id = signed_in(served)
    served.seed(lambda core, acc: _verify(acc, user_id))
    with served.browser() as admin, b:
        admin.sign_in(admin_email)
        key = b.post("/api/v1/keys", json={"name": "mine"}).json()["key"]
        assert httpx.get(served.url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
        resp = admin.request("PATCH", f"/api/v1/users/{user_id}", json={"disabled": True})
        assert resp.status_code == 200 and resp.json()["disabled"] is True, resp.text
        _refused_everywhere(served, str(b.session_cookie))
        assert httpx.get(served.url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 401


# --------------------------------------------------------------------------- object-level authorization


def test_members_cannot_reach_each_others_objects(served: Served) -> None:
    """User A can neither read, change nor delete user B's keys, sessions, usage or audit
    events: 404 like an id that does not exist, never 403."""
    a, a_id = signed_in(served, "alice")
    b, b_id = signed_in(served, "bob")
    served.seed(lambda core, acc: _verify(acc, a_id))
    served.seed(lambda core, acc: _verify(acc, b_id))
    with a, b:
        b_key = b.post("/api/v1/keys", json={"name": "bob's"}).json()
        a_key = a.post("/api/v1/keys", json={"name": "alice's"}).json()
        b_session = b.get("/api/v1/me/sessions").json()["data"][0]["id"]
        kid = b_key["id"]
        alert = served.seed(lambda core, acc: _alert(core, kid))
        assert b.get(f"/api/v1/alerts/{alert}").status_code == 200
        missing = "key_0000000000000000"
        refusals = [
            a.get(f"/api/v1/keys/{kid}"),
            a.get(f"/api/v1/keys/{kid}?include_deleted=true"),
            a.request("PATCH", f"/api/v1/keys/{kid}", json={"name": "mine now"}),
            a.post(f"/api/v1/keys/{kid}/rotate", json={}),
            a.get(f"/api/v1/keys/{kid}/usage"),
            a.get(f"/api/v1/usage?key_id={kid}"),
            a.request("DELETE", f"/api/v1/keys/{kid}"),
            a.request("DELETE", f"/api/v1/me/sessions/{b_session}"),
            a.get(f"/api/v1/users/{b_id}"),
            a.get(f"/api/v1/audit?user_id={b_id}"),
            a.get(f"/api/v1/alerts/{alert}"),
            a.post(f"/api/v1/alerts/{alert}/ack"),
        ]
        for resp in refusals:
            api_error(resp, 404, "not_found")
        # The same answer as for an id that does not exist.
        assert (
            a.get(f"/api/v1/keys/{missing}").json()["error"]["message"].replace(missing, kid)
            == refusals[0].json()["error"]["message"]
        )
        # A list filtered by B's key lists nothing (as for a key without alerts).
        assert a.get(f"/api/v1/alerts?key_id={kid}&status=all").json()["data"] == []
        # Nothing changed for B.
        assert b.get(f"/api/v1/alerts/{alert}").json()["acknowledged_at"] is None
        assert b.get(f"/api/v1/keys/{kid}").json()["name"] == "bob's"
        assert b.get("/api/v1/me/sessions").json()["data"][0]["id"] == b_session
        # A sees only A's own keys, usage and audit events.
        listed = a.get("/api/v1/keys").json()["data"]
        assert [k["id"] for k in listed] == [a_key["id"]] and listed[0]["owner"] == a_id
        # The owner filter is an admin's: a member asking for B's keys still gets only their own.
        assert [k["id"] for k in a.get(f"/api/v1/keys?owner={b_id}").json()["data"]] == [a_key["id"]]
        events = a.get("/api/v1/audit").json()["data"]
        assert events and {e["user_id"] for e in events} == {a_id}
        assert a.get("/api/v1/users").status_code == 403  # an admin-only list, not an object


def test_admin_sees_everyone_with_an_owner_filter(served: Served) -> None:
    admin_email = new_email("root")
    served.user(admin_email, role="admin")
    m, m_id = signed_in(served, "carol")
    served.seed(lambda core, acc: _verify(acc, m_id))
    with served.browser() as admin, m:
        admin.sign_in(admin_email)
        key = m.post("/api/v1/keys", json={"name": "carol's"}).json()
        mine = admin.get(f"/api/v1/keys?owner={m_id}").json()["data"]
        assert [k["id"] for k in mine] == [key["id"]]
        assert admin.get(f"/api/v1/keys/{key['id']}").status_code == 200
        assert admin.get(f"/api/v1/audit?user_id={m_id}").json()["data"]
        users = admin.get("/api/v1/users?limit=200").json()["data"]
        assert m_id in {u["id"] for u in users}


# --------------------------------------------------------------------------- registration, verification, 2FA


def test_register_verify_and_create_a_key(served: Served, browser: Browser) -> None:
    email = new_email("newcomer")
    resp = browser.post("/api/v1/auth/register", json={"email": email, "password": STRONG})
    assert resp.status_code == 202, resp.text
    again = browser.post("/api/v1/auth/register", json={"email": email, "password": STRONG})
    assert again.status_code == 202 and again.json() == resp.json()  # the same answer for a known address
    weak = browser.post("/api/v1/auth/register", json={"email": new_email("w"), "password": "Password1"})
    assert api_error(weak, 422, "invalid_request", field="password")["code"] == "weak_password"

    browser.sign_in(email)
    unverified = browser.post("/api/v1/keys", json={"name": "too early"})
    err = api_error(unverified, 403, "permission_error")
    assert err["code"] == "email_not_verified" and "verify" in err["message"]

    def verification_mail() -> Any:
        mails = [m for m in outbox(served.data_dir) if m["To"] == email and "Verify" in str(m["Subject"])]
        return mails[-1] if mails else None

    until_sync(lambda: verification_mail() is not None, "the verification mail in the outbox")
    token = token_in(verification_mail())
    assert browser.post("/api/v1/auth/verify", json={"token": token}).status_code == 200
    assert api_error(browser.post("/api/v1/auth/verify", json={"token": token}), 400, "invalid_request")
    created = browser.post("/api/v1/keys", json={"name": "now"})
    assert created.status_code == 201 and created.json()["owner"] == browser.get("/api/v1/me").json()["id"]


def test_password_reset_ends_every_session(served: Served, browser: Browser) -> None:
    email, _ = member(served)
    with served.browser() as other:
        other.sign_in(email)
        known = browser.post("/api/v1/auth/password/reset", json={"email": email})
        unknown = browser.post("/api/v1/auth/password/reset", json={"email": new_email("ghost")})
        assert known.status_code == unknown.status_code == 202 and known.json() == unknown.json()

        def reset_mail() -> Any:
            mails = [m for m in outbox(served.data_dir) if m["To"] == email and "Reset" in str(m["Subject"])]
            return mails[-1] if mails else None

        until_sync(lambda: reset_mail() is not None, "the reset mail")
        token = token_in(reset_mail())
        resp = browser.post("/api/v1/auth/password/reset/confirm", json={"token": token, "password": OTHER_STRONG})
        assert resp.status_code == 200, resp.text
        _refused_everywhere(served, str(other.session_cookie), times=3)
        browser.sign_in(email, OTHER_STRONG)


def test_two_factor_enrol_and_sign_in(served: Served) -> None:
    email, _ = member(served)
    with served.browser() as b:
        b.sign_in(email)
        enrol = b.post("/api/v1/me/totp")
        assert enrol.status_code == 200, enrol.text
        e = enrol.json()
        assert e["otpauth_uri"].startswith("otpauth://totp/") and e["qr_svg"].lstrip().startswith("<svg")
        totp = pyotp.TOTP(e["secret"])
        codes = b.post("/api/v1/me/totp/confirm", json={"code": totp.now()}).json()["recovery_codes"]
        assert len(codes) == 10

    with served.browser() as b:
        first = b.sign_in(email)
        assert first["status"] == "two_factor_required" and first["two_factor_token"]
        assert b.session_cookie is None
        wrong = b.post(
            "/api/v1/auth/signin/two-factor", json={"code": "000000", "two_factor_token": first["two_factor_token"]}
        )
        assert api_error(wrong, 401, "authentication_error")["code"] == "invalid_second_factor"
        ok = b.post(
            "/api/v1/auth/signin/two-factor", json={"code": codes[0], "two_factor_token": first["two_factor_token"]}
        )
        assert ok.status_code == 200 and ok.json()["status"] == "signed_in", ok.text
        assert b.session_cookie is not None
        b.csrf = ok.json()["csrf_token"]
        assert b.get("/api/v1/me").json()["two_factor_enabled"] is True


def test_sign_in_throttling_is_429_with_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("throttle") / "data"
    data.mkdir()
    server = Served(data, workers=1, env={"AGENTROUTER_ACCOUNTS_SIGNIN_ACCOUNT_ATTEMPTS": "3"}).start()
    try:
        email = "target@example.com"
        server.user(email)
        with server.browser() as b:
            statuses = []
            for _ in range(4):
                resp = b.post("/api/v1/auth/signin", json={"email": email, "password": "Not-The-Password-9"})
                statuses.append(resp.status_code)
            assert statuses == [401, 401, 401, 429], statuses
            err = api_error(resp, 429, "rate_limit_error")
            assert err["code"] == "too_many_attempts" and int(resp.headers["retry-after"]) >= 1
            # Even the right password is refused while throttled (and costs no hashing).
            assert b.post("/api/v1/auth/signin", json={"email": email, "password": STRONG}).status_code == 429
    finally:
        server.stop()


def test_registration_throttling_is_429_with_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("register-throttle") / "data"
    data.mkdir()
    env = {"AGENTROUTER_ACCOUNTS_REGISTRATION": "open", "AGENTROUTER_ACCOUNTS_REGISTER_IP_ATTEMPTS": "2"}
    server = Served(data, workers=1, env=env).start()
    try:
        with server.browser() as b:
            statuses = []
            for i in range(3):
                resp = b.post("/api/v1/auth/register", json={"email": f"flood{i}@example.com", "password": STRONG})
                statuses.append(resp.status_code)
            assert statuses == [202, 202, 429], statuses
            err = api_error(resp, 429, "rate_limit_error")
            assert err["code"] == "too_many_attempts" and int(resp.headers["retry-after"]) >= 1
            resp = b.post("/api/v1/auth/password/reset", json={"email": "flood0@example.com"})
            assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    finally:
        server.stop()


def _seed_noop(core: Core, acc: AccountService) -> Any:  # pragma: no cover - a typing aid
    return None
