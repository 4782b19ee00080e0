"""GitHub and Google sign-in through a real ``agentrouter serve`` and the fake
providers on loopback (``tests/oauth_fakes.py``), with an HTTP client that follows
redirects and keeps cookies, like a browser.

Each refusal leaves nothing behind: no session cookie, no user, no identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentrouter.accounts.service import AccountService
from agentrouter.core import Core
from tests.accounts_web import STRONG, Served
from tests.api_fixtures import api_error
from tests.oauth_fakes import Account, FakeGitHub, FakeGoogle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, github: FakeGitHub, google: FakeGoogle) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("oauth-e2e") / "data"
    data.mkdir()
    server = Served(data, workers=2, github=github, google=google)
    github.redirect_uris = {server.url + "/api/v1/auth/oauth/github/callback"}
    google.redirect_uris = {server.url + "/api/v1/auth/oauth/google/callback"}
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _reset(github: FakeGitHub, google: FakeGoogle) -> None:
    github.account = google.account = None
    google.tamper.clear()
    github.misbehave.clear()
    google.misbehave.clear()


def refused(resp: httpx.Response, code: str, page: str = "/sign-in") -> dict[str, list[str]]:
    """The browser followed a refused callback: its answer was a 302 to the console's
    ``page`` with ``oauth_error=code`` (no callback code or state), the state cookie
    cleared, no session set. The query of that redirect."""
    callback = [r for r in resp.history if "/callback" in r.url.path][-1]
    assert callback.status_code == 302, (callback.status_code, callback.text)
    location = urlsplit(callback.headers["location"])
    assert not location.scheme and not location.netloc and location.path == page, location
    query = parse_qs(location.query)
    assert query["oauth_error"] == [code], query
    assert "code" not in query and "state" not in query
    cookies = callback.headers.get_list("set-cookie")
    assert any(c.startswith("agentrouter_oauth=;") and "Max-Age=0" in c for c in cookies)
    assert not any(c.startswith("agentrouter_session=ars_") for c in cookies)
    return query


def browser(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.url, timeout=30.0, follow_redirects=True, headers={"origin": served.url})


def counts(served: Served) -> tuple[int, int]:
    """(users, identities) in the store."""

    async def read(core: Core, acc: AccountService) -> tuple[int, int]:
        users = await acc._db.count_users()
        rows = list(await core.store._db.execute_fetchall("SELECT COUNT(*) FROM identities"))
        return users, int(rows[0][0])

    return served.seed(read)


def test_providers_are_offered(served: Served) -> None:
    offered = httpx.get(served.url + "/api/v1/auth/providers").json()
    assert offered["providers"] == ["github", "google"]


def test_github_sign_in_creates_a_verified_user_and_returns_to_next(served: Served, github: FakeGitHub) -> None:
    github.account = Account(subject="9001", email="octo@example.com", name="Octo")
    with browser(served) as b:
        resp = b.get("/api/v1/auth/oauth/github/start", params={"next": "/keys?tab=mine"})
        assert resp.status_code == 200, resp.text  # the console's key list, signed in
        assert str(resp.url) == served.url + "/keys?tab=mine"
        hops = [str(r.url) for r in resp.history]
        assert hops[0].startswith(served.url + "/api/v1/auth/oauth/github/start")
        assert hops[1].startswith(github.url + "/login/oauth/authorize")
        assert hops[2].startswith(served.url + "/api/v1/auth/oauth/github/callback")
        callback = resp.history[2]
        cookies = callback.headers.get_list("set-cookie")
        assert any(c.startswith("agentrouter_session=ars_") and "HttpOnly" in c for c in cookies)
        assert any(c.startswith("agentrouter_oauth=;") and "Max-Age=0" in c for c in cookies)
        me = b.get("/api/v1/auth/session").json()
        assert me["user"]["email"] == "octo@example.com" and me["user"]["email_verified"] is True
        assert me["session"]["method"] == "github"
        b.headers["x-csrf-token"] = me["csrf_token"]
        identities = b.get("/api/v1/me/identities").json()["data"]
        assert [i["id"] for i in identities] == ["github:9001"]
        # Signing in again finds the same user by the stable id, whatever the email now says.
        github.account = Account(subject="9001", email="renamed@example.com")
        b.cookies.clear()
        b.get("/api/v1/auth/oauth/github/start")
        assert b.get("/api/v1/me").json()["id"] == me["user"]["id"]


def test_google_sign_in(served: Served, google: FakeGoogle) -> None:
    google.account = Account(subject="g-77", email="person@gmail.com", name="Per Son")
    with browser(served) as b:
        b.get("/api/v1/auth/oauth/google/start")
        me = b.get("/api/v1/auth/session").json()
        assert me["user"]["email"] == "person@gmail.com" and me["session"]["method"] == "google"
    sent = google.seen.authorize[-1]
    assert sent["nonce"] and sent["code_challenge_method"] == "S256"


@pytest.mark.parametrize("tamper", ["bad_signature", "wrong_audience", "wrong_nonce", "expired", "wrong_issuer"])
def test_a_bad_id_token_is_refused_and_creates_nothing(served: Served, google: FakeGoogle, tamper: str) -> None:
    google.account = Account(subject=f"g-bad-{tamper}", email=f"{tamper}@gmail.com")
    google.tamper.add(tamper)
    before = counts(served)
    with browser(served) as b:
        resp = b.get("/api/v1/auth/oauth/google/start")
        assert refused(resp, "id_token")["provider"] == ["google"]
        assert "agentrouter_session" not in b.cookies
    assert counts(served) == before


@pytest.mark.parametrize(
    ("provider", "endpoint"),
    [("github", "token"), ("github", "user"), ("github", "emails"), ("google", "token")],
)
def test_a_provider_answering_an_html_page_is_refused_and_creates_nothing(
    served: Served, github: FakeGitHub, google: FakeGoogle, provider: str, endpoint: str
) -> None:
    """(Google's discovery document and JWKS are cached by the workers: their
    misbehaviour is in test_api_oauth_client.py.)"""
    fake = github if provider == "github" else google
    fake.account = Account(subject="8080", email=f"portal-{endpoint}@example.com")
    fake.misbehave[endpoint] = "html"
    before = counts(served)
    with browser(served) as b:
        resp = b.get(f"/api/v1/auth/oauth/{provider}/start", params={"next": "/keys"})
        query = refused(resp, "provider_unavailable")
        assert query["provider"] == [provider] and query["next"] == ["/keys"]
        assert "agentrouter_session" not in b.cookies
    assert counts(served) == before


def test_cancelled_at_the_provider_goes_back_to_sign_in(served: Served, github: FakeGitHub) -> None:
    github.account = None  # the person pressed "Cancel": error=access_denied
    with browser(served) as b:
        resp = b.get("/api/v1/auth/oauth/github/start")
        refused(resp, "denied")
        assert str(resp.url) == served.url + "/sign-in?oauth_error=denied&provider=github"


def _to_callback(served: Served, b: httpx.Client, provider: str) -> str:
    """Start a sign-in and go through the provider; the callback URL (not followed)."""
    start = b.get(f"/api/v1/auth/oauth/{provider}/start", follow_redirects=False)
    assert start.status_code == 302
    at_provider = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_provider.status_code == 302
    return str(at_provider.headers["location"])


def test_wrong_state_is_refused(served: Served, github: FakeGitHub) -> None:
    github.account = Account(subject="4", email="four@example.com")
    before = counts(served)
    with browser(served) as b:
        callback = _to_callback(served, b, "github")
        parts = urlsplit(callback)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        resp = b.get(parts.path, params={"code": q["code"], "state": "not-" + q["state"]})
        refused(resp, "state")
    # A callback in another browser (no state cookie): a login-CSRF attempt.
    with browser(served) as b, browser(served) as victim:
        callback = _to_callback(served, b, "github")
        resp = victim.get(callback)
        refused(resp, "state")
        assert "agentrouter_session" not in victim.cookies
    assert counts(served) == before


def test_a_replayed_code_is_refused(served: Served, github: FakeGitHub) -> None:
    github.account = Account(subject="5", email="five@example.com")
    with browser(served) as b:
        callback = _to_callback(served, b, "github")
        state_cookie = b.cookies.get("agentrouter_oauth")
        assert b.get(callback, follow_redirects=False).status_code == 302
        # The same callback again: the state cookie is gone...
        refused(b.get(callback), "state")
        # ...and with the cookie put back, the provider refuses the used code.
        b.cookies.set("agentrouter_oauth", str(state_cookie), domain="127.0.0.1")
        refused(b.get(callback), "code")


def test_unverified_email_does_not_link_to_an_existing_account(served: Served, github: FakeGitHub) -> None:
    served.user("existing@example.com")
    before = counts(served)
    github.account = Account(subject="66", email="existing@example.com", email_verified=False)
    with browser(served) as b:
        resp = b.get("/api/v1/auth/oauth/github/start")
        refused(resp, "unverified_email")
        assert "agentrouter_session" not in b.cookies
    assert counts(served) == before
    # An account whose own address is unverified is not linked either, even by a verified one.
    served.user("unverified@example.com", verified=False)
    github.account = Account(subject="67", email="unverified@example.com", email_verified=True)
    with browser(served) as b:
        refused(b.get("/api/v1/auth/oauth/github/start"), "identity_not_linked")


def test_link_from_settings_then_unlink(served: Served, google: FakeGoogle) -> None:
    email = "linker@example.com"
    served.user(email)
    google.account = Account(subject="g-link", email="other-address@gmail.com")
    with browser(served) as b:
        signed = b.post("/api/v1/auth/signin", json={"email": email, "password": STRONG}).json()
        b.headers["x-csrf-token"] = signed["csrf_token"]
        # Linking is a state change: POST with the CSRF token, then the browser goes to the provider.
        assert b.get("/api/v1/me/identities/google/link").status_code == 405
        url = b.post("/api/v1/me/identities/google/link", params={"next": "/account"}).json()["authorize_url"]
        resp = b.get(url)
        assert str(resp.url) == served.url + "/account"
        identities = b.get("/api/v1/me/identities").json()["data"]
        assert [i["id"] for i in identities] == ["google:g-link"]
        # The linked identity now signs this user in.
        with browser(served) as other:
            other.get("/api/v1/auth/oauth/google/start")
            assert other.get("/api/v1/me").json()["email"] == email
        # Linking an identity that another account has: back to the account page, worded there.
        with browser(served) as other:
            other_email = "other-linker@example.com"
            served.user(other_email)
            signed_other = other.post("/api/v1/auth/signin", json={"email": other_email, "password": STRONG}).json()
            other.headers["x-csrf-token"] = signed_other["csrf_token"]
            url = other.post("/api/v1/me/identities/google/link").json()["authorize_url"]
            query = refused(other.get(url), "identity_conflict", page="/account")
            assert query["provider"] == ["google"] and "next" not in query
        gone = b.request("DELETE", "/api/v1/me/identities/google:g-link")
        assert gone.status_code == 200, gone.text
        assert b.get("/api/v1/me/identities").json()["data"] == []


def test_unknown_provider_and_unconfigured(served: Served) -> None:
    err = api_error(httpx.get(served.url + "/api/v1/auth/oauth/gitlab/start"), 404, "not_found")
    assert "not configured" in err["message"]
