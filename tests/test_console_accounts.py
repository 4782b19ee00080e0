"""The console's account pages driven through ASGI with a cookie jar (the browser's
part): first-admin setup, sign-in (wrong password, throttling, two-factor),
registration and verification by the mailed link, reset, sign-out, an ended session
sent back to sign in, CSRF and same-origin refusals, and another user's key as 404.
The same journeys in Chromium: ``tests/test_console_journeys.py``."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pyotp
import pytest

from agentrouter.accounts import service as accounts_service
from agentrouter.actor import INSTANCE
from agentrouter.api.account_routes import ACCOUNT_PAGE, OAUTH_ERROR_CODES, SIGN_IN_PAGE, TWO_FACTOR_PAGE
from agentrouter.console import build_site
from agentrouter.console.app import Console
from agentrouter.gateway.app import Gateway, create_app
from tests.accounts_helpers import OTHER_STRONG as MEMBER
from tests.accounts_helpers import STRONG, outbox, token_in
from tests.gateway_fixtures import Reply, call, settings_for
from tests.waiting import until

HOST = "console.test:8080"
ORIGIN = "http://" + HOST


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = settings_for(
        tmp_path / "data",
        AGENTROUTER_USAGE_WRITER="inline",
        AGENTROUTER_MONITOR_ENABLED="false",
        AGENTROUTER_ACCOUNTS_REGISTRATION="open",
        AGENTROUTER_PUBLIC_URL=ORIGIN,
    )
    gateway = create_app(settings, fallback=build_site(settings))
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()


class Jar:
    """A browser's cookies and its same-site ``Origin`` on form posts."""

    def __init__(self, app: Gateway, origin: str = ORIGIN) -> None:
        self.app = app
        self.origin = origin
        self.cookies: dict[str, str] = {}

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"host": HOST, "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**headers, **(extra or {})}

    def _keep(self, reply: Reply) -> Reply:
        for name, value in reply.raw_headers:
            if name == b"set-cookie":
                jar: SimpleCookie = SimpleCookie()
                jar.load(value.decode())
                for key, morsel in jar.items():
                    if morsel["max-age"] == "0":
                        self.cookies.pop(key, None)
                    else:
                        self.cookies[key] = morsel.value
        return reply

    async def get(self, path: str) -> Reply:
        parts = urlsplit(path)
        return self._keep(await call(self.app, "GET", parts.path, headers=self._headers(), query=parts.query.encode()))

    async def open_link(self, link: str) -> Reply:
        """A mailed link: its token leaves the URL at once (a redirect, the token in
        the page's cookie, no Referer), then the page."""
        moved = await self.get(link.removeprefix(ORIGIN))
        assert moved.status == 303 and moved.headers["referrer-policy"] == "no-referrer", moved.headers
        assert "token" not in moved.headers["location"]
        page = await self.get(moved.headers["location"])
        assert page.status == 200 and page.headers["referrer-policy"] == "same-origin"
        return page

    async def post(self, path: str, **fields: str) -> Reply:
        headers = self._headers({"content-type": "application/x-www-form-urlencoded", "origin": self.origin})
        return self._keep(await call(self.app, "POST", path, headers=headers, body=urlencode(fields).encode()))

    async def csrf(self, path: str = "/keys") -> str:
        page = (await self.get(path)).body.decode()
        found = re.search(r'name="csrf_token" value="([^"]*)"', page)
        assert found and found.group(1), page[:500]
        return found.group(1)


def mails(tmp_path: Path, to: str, subject: str = "") -> list[Any]:
    return [m for m in outbox(tmp_path / "data") if m["To"] == to and subject in str(m["Subject"]).lower()]


def text(reply: Reply) -> str:
    return reply.body.decode()


def console_of(app: Gateway) -> Console:
    site: Any = app._fallback
    return site.console  # type: ignore[no-any-return]


async def first_admin(app: Gateway, email: str = "admin@example.com") -> Jar:
    assert app.core.accounts is not None
    link = await app.core.accounts.prepare_setup()
    assert link is not None
    browser = Jar(app)
    await browser.open_link(link)
    done = await browser.post("/setup", email=email, password=STRONG, display_name="Ada")
    assert done.status == 303 and done.headers["location"] == "/keys", text(done)
    return browser


def test_the_console_serves_the_paths_of_the_mailed_links() -> None:
    paths = {r[1] for r in __import__("agentrouter.console.routes", fromlist=["ROUTES"]).ROUTES if r[0] == "GET"}
    for path in (
        accounts_service.VERIFY_PATH,
        accounts_service.RESET_PATH,
        accounts_service.INVITE_PATH,
        accounts_service.SETUP_PATH,
        TWO_FACTOR_PAGE,
        SIGN_IN_PAGE,
        ACCOUNT_PAGE,
    ):
        assert path in paths, path


def test_the_console_words_every_oauth_error_code_of_the_api() -> None:
    from agentrouter.console.auth import OAUTH_ERRORS

    assert set(OAUTH_ERRORS) == set(OAUTH_ERROR_CODES)


async def test_a_refused_oauth_callback_is_worded_on_the_sign_in_page(app: Gateway) -> None:
    """Where the API's callback sends a browser it refused (tests/test_api_oauth_e2e.py)."""
    browser = Jar(app)
    page = text(await browser.get("/sign-in?oauth_error=denied&provider=github&next=/alerts"))
    assert 'role="alert"' in page and "Sign-in with GitHub was cancelled." in page
    assert 'value="/alerts"' in page  # signing in with the password still returns there
    page = text(await browser.get("/sign-in?oauth_error=provider_unavailable&provider=google"))
    assert "Google could not be reached or answered something unexpected" in page
    # An unknown code or provider is not echoed: the general message.
    page = text(await browser.get("/sign-in?oauth_error=%3Cb%3Eboom&provider=%3Ci%3Ex"))
    assert "Sign-in with the provider was refused" in page and "boom" not in page and "<i>" not in page


async def test_a_refused_link_is_worded_on_the_account_page(app: Gateway) -> None:
    admin = await first_admin(app)
    page = text(await admin.get("/account?oauth_error=identity_conflict&provider=google"))
    assert "This Google account is linked to another AgentRouter account already." in page


async def test_first_admin_setup_signs_in(app: Gateway) -> None:
    admin = await first_admin(app)
    keys = await admin.get("/keys")
    assert keys.status == 200
    page = text(keys)
    assert "Welcome!" in page and "No keys yet" in page
    for nav in ("/devices", "/account", "/admin"):
        assert f'href="{nav}"' in page
    # The link works once.
    again = await Jar(app).post("/setup", token="x" * 43, email="b@example.com", password=STRONG)
    assert again.status == 200 and 'class="error-box"' in text(again)


async def test_sign_in_errors_and_the_way_back(app: Gateway) -> None:
    await first_admin(app)
    browser = Jar(app)
    sent = await browser.get("/keys/key_abc?range=7d")
    assert sent.status == 303 and sent.headers["location"] == "/sign-in?next=/keys/key_abc%3Frange%3D7d"
    wrong = await browser.post("/sign-in", email="admin@example.com", password="Wrong-Password-1", next="/keys")
    assert wrong.status == 200 and 'class="error-box"' in text(wrong)
    assert 'value="admin@example.com"' in text(wrong)  # the address is kept, the password not
    right = await browser.post("/sign-in", email="ADMIN@example.com", password=STRONG, next="/alerts?status=all")
    assert right.status == 303 and right.headers["location"] == "/alerts?status=all"
    assert (await browser.get("/alerts?status=all")).status == 200
    # Signing out ends the session; the next page asks to sign in again.
    out = await browser.post("/sign-out", csrf_token=await browser.csrf())
    assert out.status == 303 and out.headers["location"] == "/sign-in"
    assert (await browser.get("/keys")).status == 303


async def test_sign_out_from_every_page_sends_the_csrf_token_and_ends_the_session(app: Gateway) -> None:
    """Sign-out needs ``X-CSRF-Token`` with a live session: the header's form on each
    page carries it, and the session is really gone afterwards."""
    browser = await first_admin(app)
    pages = ["/keys", "/keys/new", "/alerts", "/devices", "/account", "/admin", "/keys/key_missing"]
    for i, path in enumerate(pages):
        if i:
            signed = await browser.post("/sign-in", email="admin@example.com", password=STRONG, next="/keys")
            assert signed.status == 303, text(signed)
        page = text(await browser.get(path))
        form = re.search(
            r'<form method="post" action="/sign-out">\s*<input type="hidden" name="csrf_token" value="([^"]*)"', page
        )
        assert form and form.group(1), (path, page[:300])
        out = await browser.post("/sign-out", csrf_token=form.group(1))
        assert out.status == 303 and out.headers["location"] == "/sign-in", (path, text(out))
        assert (await browser.get("/keys")).status == 303, path  # signed out: sent to sign in


async def test_a_refused_sign_out_does_not_claim_success(app: Gateway) -> None:
    browser = await first_admin(app)
    out = await browser.post("/sign-out", csrf_token="not-the-token")
    assert out.status != 303 or out.headers["location"] != "/sign-in", "claimed 'Signed out.'"
    assert (await browser.get("/keys")).status == 200  # still signed in, and told so


async def test_a_throttled_sign_in_says_when_to_retry(app: Gateway) -> None:
    await first_admin(app)
    browser = Jar(app)
    for _ in range(app.settings.accounts.signin_account_attempts):
        await browser.post("/sign-in", email="admin@example.com", password="Wrong-Password-1")
    page = text(await browser.post("/sign-in", email="admin@example.com", password=STRONG))
    assert re.search(r"Try again in \d+ s", page), page
    assert "You can try again at <time" in page


async def test_a_throttled_registration_says_when_to_retry(app: Gateway) -> None:
    browser = Jar(app)
    for i in range(app.settings.accounts.register_ip_attempts):
        await browser.post("/register", email=f"flood{i}@example.com", password=STRONG)
    page = text(await browser.post("/register", email="late@example.com", password=STRONG))
    assert "too many registrations" in page and re.search(r"Try again in \d+ s", page), page
    assert "You can try again at <time" in page


async def test_register_verify_by_the_mailed_link(app: Gateway, tmp_path: Path) -> None:
    browser = Jar(app)
    form = text(await browser.get("/register"))
    assert "At least 8 characters, with an uppercase letter" in form  # the rule, before typing
    weak = await browser.post("/register", email="mel@example.com", password="password1")
    assert re.search(r'id="e-password"[^>]*>[^<]+', text(weak)), text(weak)  # next to the field
    done = await browser.post("/register", email="mel@example.com", password=STRONG, display_name="Mel")
    assert done.status == 200 and "Check your mail" in text(done)
    await until(lambda: bool(mails(tmp_path, "mel@example.com")), "the verification mail")
    (mail,) = mails(tmp_path, "mel@example.com")
    token = token_in(mail)
    page = await browser.open_link(f"{accounts_service.VERIFY_PATH}?token={token}")
    assert "Verify my address" in text(page)  # opening the link changed nothing yet
    verified = await browser.post("/verify-email")
    assert verified.status == 303 and verified.headers["location"] == "/sign-in"
    signed = await browser.post("/sign-in", email="mel@example.com", password=STRONG, next="/keys")
    assert signed.status == 303
    assert "No keys yet" in text(await browser.get("/keys"))


async def test_an_unverified_user_is_told_why_they_cannot_create_a_key(app: Gateway, tmp_path: Path) -> None:
    browser = Jar(app)
    await browser.post("/register", email="unv@example.com", password=STRONG)
    await browser.post("/sign-in", email="unv@example.com", password=STRONG)
    csrf = await browser.csrf("/keys/new")
    refused = text(await browser.post("/keys/new", csrf_token=csrf, name="x", preset="none"))
    assert "verif" in refused.lower() and 'class="error-box"' in refused


async def test_reset_password_by_the_mailed_link(app: Gateway, tmp_path: Path) -> None:
    await first_admin(app)
    browser = Jar(app)
    asked = await browser.post("/reset-password", email="admin@example.com")
    assert "Check your mail" in text(asked)
    await until(lambda: bool(mails(tmp_path, "admin@example.com", "reset")), "the reset mail")
    (mail,) = mails(tmp_path, "admin@example.com", "reset")
    token = token_in(mail)
    await browser.open_link(f"{accounts_service.RESET_PATH}?token={token}")
    new = "Granite-Meadow-73-Fjord"
    done = await browser.post("/reset-password", password=new)
    assert done.status == 303 and done.headers["location"] == "/sign-in"
    assert (await browser.post("/sign-in", email="admin@example.com", password=new)).status == 303


async def test_cross_site_posts_are_refused(app: Gateway) -> None:
    """Journey 7 through ASGI: a form post from another origin, and one without the
    session's CSRF token, change nothing."""
    admin = await first_admin(app)
    csrf = await admin.csrf()
    evil = Jar(app, origin="https://evil.example")
    evil.cookies = dict(admin.cookies)  # the browser attaches the cookie (SameSite aside)
    refused = await evil.post("/keys/new", csrf_token=csrf, name="planted", preset="none")
    assert "another site" in text(refused)
    no_token = await admin.post("/keys/new", name="planted", preset="none")
    assert "another site or an old page" in text(no_token)
    assert [k for k in await app.core.keys.list() if k.name == "planted"] == []
    made = await admin.post("/keys/new", csrf_token=csrf, name="mine", preset="none")
    assert made.status == 201


async def test_a_member_cannot_reach_another_members_key_or_the_admin_pages(app: Gateway, tmp_path: Path) -> None:
    """Journey 6 through ASGI."""
    admin = await first_admin(app)
    admin_csrf = await admin.csrf()
    await admin.post("/keys/new", csrf_token=admin_csrf, name="admins", preset="none")
    admins_key = next(k for k in await app.core.keys.list() if k.name == "admins")
    assert app.core.accounts is not None
    await app.core.accounts.create_user(INSTANCE, email="m@example.com", password=STRONG, verified=True)
    member = Jar(app)
    await member.post("/sign-in", email="m@example.com", password=STRONG)
    page = await member.get(f"/keys/{admins_key.id}")
    assert page.status == 404
    for path in ("/admin", "/admin/users"):
        assert (await member.get(path)).status == 404, path
    assert 'href="/admin"' not in text(await member.get("/keys"))
    delete = await member.post(f"/keys/{admins_key.id}/delete", csrf_token=await member.csrf())
    assert delete.status == 404
    assert (await app.core.keys.get(admins_key.id)).state == "active"


async def test_two_factor_sign_in(app: Gateway) -> None:
    admin = await first_admin(app)
    assert app.core.accounts is not None
    csrf = await admin.csrf()
    started = text(await admin.post("/account/totp", csrf_token=csrf))
    secret = re.search(r'data-totp-secret="([A-Z2-7]+)"', started)
    assert secret is not None and 'src="data:image/svg+xml;base64,' in started
    confirmed = text(await admin.post("/account/totp/confirm", csrf_token=csrf, code=pyotp.TOTP(secret.group(1)).now()))
    codes = re.findall(r'<li class="recovery-code"><code>([^<]+)</code>', confirmed)
    assert len(codes) >= 8
    browser = Jar(app)
    step = await browser.post("/sign-in", email="admin@example.com", password=STRONG, next="/devices")
    assert step.status == 200 and "Two-factor sign-in" in text(step)
    token = re.search(r'name="two_factor_token" value="([^"]+)"', text(step))
    assert token is not None
    wrong = await browser.post("/sign-in/two-factor", two_factor_token=token.group(1), code="000000", next="/devices")
    assert re.search(r'id="e-code"|class="error-box"', text(wrong))
    done = await browser.post("/sign-in/two-factor", two_factor_token=token.group(1), code=codes[0], next="/devices")
    assert done.status == 303 and done.headers["location"] == "/devices"


async def test_an_ended_session_is_sent_to_sign_in_and_told_why(app: Gateway) -> None:
    first = await first_admin(app)
    second = Jar(app)
    await second.post("/sign-in", email="admin@example.com", password=STRONG)
    assert (await second.get("/keys")).status == 200
    devices = text(await first.get("/devices"))
    assert devices.count("data-session-id=") == 2 and "this device" in devices
    ended = await first.post("/devices/end-others", csrf_token=await first.csrf("/devices"))
    assert ended.status == 303 and ended.headers["location"] == "/devices"
    sent = await second.get("/keys?sort=name")
    assert sent.status == 303
    assert sent.headers["location"] == "/sign-in?next=/keys%3Fsort%3Dname&ended=1"
    assert "agentrouter_session" not in second.cookies  # the API cleared the dead cookie
    page = text(await second.get(sent.headers["location"]))
    assert "Your session has ended or expired" in page and 'value="/keys?sort=name"' in page
    assert (await first.get("/keys")).status == 200  # the first device is still signed in


async def test_account_name_password_and_two_factor_off(app: Gateway) -> None:
    admin = await first_admin(app)
    other = Jar(app)
    await other.post("/sign-in", email="admin@example.com", password=STRONG)
    csrf = await admin.csrf("/account")
    named = await admin.post("/account/profile", csrf_token=csrf, display_name="Ada L.")
    assert named.status == 303
    page = text(await admin.get("/account"))
    assert 'value="Ada L."' in page and "Signed in" in page  # the name, and the audit events
    wrong = text(
        await admin.post(
            "/account/password",
            csrf_token=csrf,
            current_password="Nope-Nope-123",
            new_password="Cobalt-Whistle-94-Arbor",
        )
    )
    assert re.search(r'id="e-current_password"[^>]*>[^<]+|class="error-box"', wrong), wrong
    changed = await admin.post(
        "/account/password",
        csrf_token=csrf,
        current_password=STRONG,
        new_password="Cobalt-Whistle-94-Arbor",
        end_other_sessions="on",
    )
    assert changed.status == 303
    assert "1 other device signed out" in changed.headers["set-cookie"].replace("%20", " ")
    assert (await other.get("/keys")).status == 303  # the other device is signed out
    assert (await admin.get("/keys")).status == 200  # this one is not

    # Two-factor on, new recovery codes, off again.
    started = text(await admin.post("/account/totp", csrf_token=csrf))
    secret = re.search(r'data-totp-secret="([A-Z2-7]+)"', started)
    assert secret is not None
    totp = pyotp.TOTP(secret.group(1))
    await admin.post("/account/totp/confirm", csrf_token=csrf, code=totp.now())
    assert "Turn off two-factor sign-in" in text(await admin.get("/account"))
    bad = text(await admin.post("/account/totp/recovery-codes", csrf_token=csrf, renew_code="000000"))
    assert re.search(r'id="e-renew_code"[^>]*>[^<]+', bad), bad
    # (Not the code just used: a code works once. The next step's is accepted, the
    # server allowing one step of clock drift.)
    renewed = text(
        await admin.post("/account/totp/recovery-codes", csrf_token=csrf, renew_code=totp.at(time.time() + 30))
    )
    codes = re.findall(r'<li class="recovery-code"><code>([^<]+)</code>', renewed)
    assert codes and "shown this once" in renewed
    off = await admin.post("/account/totp/disable", csrf_token=csrf, disable_code=codes[0])
    assert off.status == 303
    assert "Turn on two-factor sign-in" in text(await admin.get("/account"))


async def test_admin_invites_sets_roles_and_disables(app: Gateway, tmp_path: Path) -> None:
    admin = await first_admin(app)
    csrf = await admin.csrf("/admin")
    invited = text(await admin.post("/admin/invitations", csrf_token=csrf, email="new@example.com", role="member"))
    link = re.search(r'id="invite-url"[^>]*value="([^"]+)"', invited)
    assert link is not None and "/register?token=" in link.group(1) and "shown this once" in invited
    assert "new@example.com as member" in text(await admin.get("/admin"))  # an open invitation

    member = Jar(app)
    await member.open_link(link.group(1))
    registered = await member.post("/register", password=MEMBER, email="new@example.com")
    assert "Check your mail" in text(registered)
    (user,) = [u for u in await app.core.accounts.list_users(INSTANCE) if u.email == "new@example.com"]  # type: ignore[union-attr]
    promoted = await admin.post(f"/admin/users/{user.id}", csrf_token=csrf, action="role", role="admin")
    assert promoted.status == 303 and "is now admin" in promoted.headers["set-cookie"].replace("%20", " ")
    await member.post("/sign-in", email="new@example.com", password=MEMBER)
    assert 'href="/admin"' in text(await member.get("/keys"))
    disabled = await admin.post(f"/admin/users/{user.id}", csrf_token=csrf, action="disable")
    assert disabled.status == 303
    assert (await member.get("/keys")).status == 303  # their session ended at once
    page = text(await admin.get("/admin"))
    assert re.search(rf'data-user-id="{user.id}".*?disabled', page, flags=re.S)
    # The last admin cannot disable themselves: the API's refusal, shown on the page.
    me = next(u for u in await app.core.accounts.list_users(INSTANCE) if u.email == "admin@example.com")  # type: ignore[union-attr]
    refused = text(await admin.post(f"/admin/users/{me.id}", csrf_token=csrf, action="disable"))
    assert f'id="e-user-{me.id}"' in refused and "hidden" not in re.search(
        rf'id="e-user-{me.id}"[^>]*>', refused
    ).group(0)  # type: ignore[union-attr]
