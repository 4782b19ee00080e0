"""The journeys of the console issue, in a real headless Chromium against a real
``agentrouter serve --workers 2`` (SQLite file), with a real SMTP server (aiosmtpd on
loopback) receiving the mails, the fake GitHub and Google providers on loopback
(``tests/oauth_fakes.py``) and the real OpenAI SDK calling ``/v1``:

1. first-admin setup from the printed link; the admin invites a member; the member
   registers from the mailed invitation, verifies by the mailed link, signs in;
2. the member creates a key with the "100 / 60 s" preset and labels, copies it from
   the page (the clipboard), calls ``/v1/chat/completions`` with the OpenAI SDK; the
   list shows the last-used time and one request; the key's chart shows it;
3. the member deletes it through the confirmation dialog; the SDK's next call raises
   ``AuthenticationError``;
4. a second device signs in; the first's devices page shows two; "Log out all other
   devices" ends the second's session on its next navigation (which goes to sign-in,
   and back to the page after signing in again);
5. sign-in with GitHub and with Google through the fake providers;
6. a member cannot reach another member's key page (404) nor the admin pages;
7. a cross-origin form post to a state-changing route is refused.

They run in order on one server (each builds on the people the one before made).
Every page is captured at desktop and phone width; a console error or a CSP
violation fails the test (``tests/browser.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import openai
import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from tests.accounts_helpers import STRONG, body, parse_mail
from tests.api_fixtures import free_port
from tests.browser import ConsoleServer, Web, start_console_server
from tests.oauth_fakes import CLIENT_ID, CLIENT_SECRET, Account, FakeGitHub, FakeGoogle
from tests.waiting import until_sync

pytestmark = pytest.mark.slow

ADMIN = "ada@example.com"
MEMBER = "mel@example.com"
OTHER = "otto@example.com"
MEMBER_PASSWORD = "Quartz-Pelican-58-Meadow"
LINK = re.compile(r"(https?://\S+\?token=[A-Za-z0-9_\-]+)")


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(parse_mail(envelope.original_content or envelope.content))
        return "250 OK"

    def wait_for(self, to: str, subject: str) -> EmailMessage:
        def found() -> EmailMessage | None:
            for mail in reversed(self.mails):
                if mail["To"] == to and subject.lower() in str(mail["Subject"]).lower():
                    return mail
            return None

        until_sync(lambda: found() is not None, f"a mail to {to} about {subject!r}", poll=0.05)
        mail = found()
        assert mail is not None
        return mail


def link_in(mail: EmailMessage) -> str:
    found = LINK.search(body(mail))
    assert found, body(mail)
    return found.group(1)


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[FakeGitHub, FakeGoogle]]:
    with FakeGitHub() as github, FakeGoogle() as google:
        yield github, google


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, inbox: tuple[Inbox, int], providers: tuple[FakeGitHub, FakeGoogle]
) -> Iterator[ConsoleServer]:
    github, google = providers
    env = {
        "AGENTROUTER_SMTP_HOST": "127.0.0.1",
        "AGENTROUTER_SMTP_PORT": str(inbox[1]),
        "AGENTROUTER_SMTP_SECURITY": "none",
        "AGENTROUTER_SMTP_SENDER": "AgentRouter <gateway@example.com>",
        "AGENTROUTER_OAUTH_GITHUB_CLIENT_ID": CLIENT_ID,
        "AGENTROUTER_OAUTH_GITHUB_CLIENT_SECRET": CLIENT_SECRET,
        "AGENTROUTER_OAUTH_GITHUB_AUTHORIZE_URL": github.url + "/login/oauth/authorize",
        "AGENTROUTER_OAUTH_GITHUB_ACCESS_TOKEN_URL": github.url + "/login/oauth/access_token",
        "AGENTROUTER_OAUTH_GITHUB_API_BASE_URL": github.api_url,
        "AGENTROUTER_OAUTH_GOOGLE_CLIENT_ID": CLIENT_ID,
        "AGENTROUTER_OAUTH_GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
        "AGENTROUTER_OAUTH_GOOGLE_SERVER_METADATA_URL": google.discovery_url,
    }
    served = start_console_server(tmp_path_factory.mktemp("journeys"), env=env)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def journey_web(browser: Any, server: ConsoleServer, request: pytest.FixtureRequest) -> Iterator[Web]:
    w = Web(browser, server.url, request.node.name)
    try:
        yield w
    finally:
        w.close()
    assert not w.problems, "the browser reported:\n" + "\n".join(w.problems)


class People:
    """Who the journeys made, shared from one to the next (they run in order)."""

    admin_state: dict[str, Any] | None = None
    member_state: dict[str, Any] | None = None
    admin_key_id: str | None = None


def setup_link(server: ConsoleServer) -> str:
    """The one-time setup link ``agentrouter serve`` printed at start (no user yet)."""
    found = re.search(r"(http://\S+/setup\?token=[A-Za-z0-9_\-]+)", server.log_path.read_text(errors="replace"))
    if found is None:
        pytest.fail(f"the server printed no setup link:\n{server.log_tail()}")
    return found.group(1)


def sign_in(page: Any, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_1_setup_invite_register_verify_sign_in(
    journey_web: Web, server: ConsoleServer, inbox: tuple[Inbox, int]
) -> None:
    web = journey_web
    mails = inbox[0]
    admin = web.context()
    page = admin.new_page()
    # Before anyone exists, the sign-in page says where to start.
    page.goto("/sign-in")
    methods = httpx.get(server.url + "/api/v1/auth/providers", timeout=10).json()
    if "setup_required" in methods:  # (an answer of the accounts routes still to land in this tree)
        expect(page.get_by_text("has no account yet")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in with GitHub")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in with Google")).to_be_visible()
    web.shoot(page, "sign-in")

    page.goto(setup_link(server))
    expect(page.get_by_role("heading", name="Create the first admin account")).to_be_visible()
    web.shoot(page, "setup")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Your name (optional)").fill("Ada")
    page.get_by_label("Password").fill(STRONG)
    expect(page.locator("[data-rule='digit']")).to_have_class(re.compile(r"\bmet\b"))  # the live checklist
    page.get_by_role("button", name="Create admin account").click()
    page.wait_for_url("**/keys")
    expect(page.locator(".flash")).to_contain_text("Welcome")
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    web.shoot(page, "keys-empty")

    # The admin invites the member: the link is shown once and mailed.
    page.get_by_role("link", name="Admin").click()
    page.get_by_label("Email (optional)").fill(MEMBER)
    page.get_by_role("button", name="Create invitation").click()
    shown = page.input_value("#invite-url")
    web.shoot(page, "admin")
    invitation = link_in(mails.wait_for(MEMBER, "invit"))
    assert invitation == shown and "/register?token=" in invitation
    People.admin_state = admin.storage_state()

    member = web.context()
    mpage = member.new_page()
    mpage.goto(invitation)
    expect(mpage.get_by_label("Email")).to_have_value(MEMBER)
    web.shoot(mpage, "register")
    mpage.get_by_label("Your name (optional)").fill("Mel")
    mpage.get_by_label("Password").fill("password1")
    mpage.get_by_role("button", name="Create account").click()
    expect(mpage.locator("#e-password")).to_be_visible()  # the strength check's verdict, by the field
    mpage.get_by_label("Password").fill(MEMBER_PASSWORD)
    mpage.get_by_role("button", name="Create account").click()
    expect(mpage.get_by_role("heading", name="Check your mail")).to_be_visible()

    verify = link_in(mails.wait_for(MEMBER, "verify"))
    mpage.goto(verify)
    web.shoot(mpage, "verify")
    mpage.get_by_role("button", name="Verify my address").click()
    mpage.wait_for_url("**/sign-in")
    expect(mpage.locator(".flash")).to_contain_text("verified")
    sign_in(mpage, MEMBER, MEMBER_PASSWORD)
    mpage.wait_for_url("**/keys")
    expect(mpage.get_by_role("heading", name="No keys yet")).to_be_visible()
    expect(mpage.get_by_role("link", name="Admin")).to_have_count(0)
    People.member_state = member.storage_state()


def test_2_and_3_create_copy_call_see_delete(journey_web: Web, server: ConsoleServer) -> None:
    web = journey_web
    assert People.member_state is not None, "journey 1 makes the member"
    context = web.context(storage_state=People.member_state, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto("/keys")
    page.get_by_role("link", name="Create your first API key").click()
    page.get_by_label("Name (optional)").fill("mel's app")
    page.get_by_label("100 / 60 s").check()
    page.get_by_label("Labels (metadata, JSON, optional)").fill('{"environment": "production", "team": "mobile"}')
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Key created")).to_be_visible()
    page.locator(".shown-once").get_by_role("button", name="Copy").click()
    expect(page.locator("[data-copied-for='#new-key']")).to_have_text("Copied to the clipboard.")
    key = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(r"sk-ar-[A-Za-z0-9]{38}", key)

    client = openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0, timeout=30.0)
    try:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}])
        assert reply.choices[0].message.content

        def listed_once() -> bool:
            page.goto("/keys")
            return page.locator("td[data-label='Requests']").first.inner_text() == "1"

        until_sync(listed_once, "one request in the key list", poll=0.2)
        row = page.locator("tbody tr").first
        expect(row.locator("td[data-label='Last used'] time")).to_have_attribute("title", re.compile(r"UTC$"))
        expect(row.locator("td[data-label='Rate limit']")).to_have_text("100 / 60 s")
        expect(row.locator(".chip")).to_have_count(2)
        web.shoot(page, "keys-member")

        row.get_by_role("link", name="mel's app").click()
        expect(page.locator("#chart-requests .series.s0 .bar")).to_have_count(1)
        assert "Requests 1, Failures 0" in (page.locator("#chart-requests .hit").last.get_attribute("aria-label") or "")
        web.shoot(page, "key-detail-member")

        page.get_by_role("link", name="Delete key…").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("mel's app")
        expect(dialog).to_contain_text("Requests using this key will fail immediately")
        dialog.get_by_role("button", name="Delete this key").click()
        page.wait_for_url("**/keys")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}])
    finally:
        client.close()


def test_4_a_second_device_is_logged_out_from_the_first(journey_web: Web, server: ConsoleServer) -> None:
    web = journey_web
    assert People.member_state is not None
    first = web.context(storage_state=People.member_state).new_page()
    second = web.context().new_page()  # another device: its own cookies
    second.goto("/keys?sort=name")
    expect(second).to_have_url(re.compile(r".*/sign-in\?next=/keys%3Fsort%3Dname$"))
    sign_in(second, MEMBER, MEMBER_PASSWORD)
    expect(second).to_have_url(re.compile(r".*/keys\?sort=name$"))

    first.goto("/devices")
    rows = first.locator("table.sessions tbody tr")
    expect(rows).to_have_count(2)
    expect(first.locator("tr.current .this-device")).to_have_count(1)
    web.shoot(first, "devices")
    first.get_by_role("button", name="Log out all other devices").click()
    expect(first.locator(".flash")).to_contain_text("Every other device is signed out")
    expect(rows).to_have_count(1)

    # The second device's next navigation: back to sign in, then to the page it wanted.
    second.goto("/keys?sort=last_used")
    expect(second).to_have_url(re.compile(r".*/sign-in\?next=/keys%3Fsort%3Dlast_used&ended=1$"))
    expect(second.locator(".error-box")).to_contain_text("Your session has ended")
    sign_in(second, MEMBER, MEMBER_PASSWORD)
    expect(second).to_have_url(re.compile(r".*/keys\?sort=last_used$"))
    People.member_state = first.context.storage_state()


def test_5_sign_in_with_github_and_google(
    journey_web: Web, server: ConsoleServer, providers: tuple[FakeGitHub, FakeGoogle]
) -> None:
    web = journey_web
    github, google = providers
    # GitHub: the member's verified address links their GitHub account on its first sign-in.
    github.account = Account(subject="583231", email=MEMBER, name="Mel", login="mel")
    page = web.page()
    page.goto("/sign-in")
    page.get_by_role("link", name="Sign in with GitHub").click()
    page.wait_for_url("**/keys")
    expect(page.locator(".who-name")).to_have_text("Mel")

    # Google: linked from the account page, then used to sign in.
    google.account = Account(subject="google-sub-77", email="mel.personal@example.com", name="Mel")
    page.goto("/account")
    web.shoot(page, "account")
    page.get_by_role("button", name="Link Google").click()
    page.wait_for_url("**/account")
    expect(page.locator(".identities")).to_contain_text("Google")
    expect(page.locator(".identities")).to_contain_text("GitHub")
    fresh = web.page()
    fresh.goto("/sign-in?next=/devices")
    fresh.get_by_role("link", name="Sign in with Google").click()
    fresh.wait_for_url("**/devices")
    expect(fresh.locator("tr.current")).to_contain_text("google")


def test_6_a_member_cannot_reach_another_members_key_nor_the_admin_pages(
    journey_web: Web, server: ConsoleServer
) -> None:
    web = journey_web
    web.allow(r"Failed to load resource: the server responded with a status of 404")
    assert People.admin_state is not None and People.member_state is not None
    admin = web.context(storage_state=People.admin_state).new_page()
    admin.goto("/keys/new")
    admin.get_by_label("Name (optional)").fill("ada's own")
    admin.get_by_role("button", name="Create").click()
    expect(admin.get_by_role("heading", name="Key created")).to_be_visible()
    admin.get_by_role("link", name="Go to the key's page").click()
    key_path = admin.url.removeprefix(server.url)
    member = web.context(storage_state=People.member_state).new_page()
    for path in (key_path, key_path + "/delete", "/admin"):
        response = member.goto(path)
        assert response is not None and response.status == 404, path
        expect(member.get_by_role("heading", name="Not found")).to_be_visible()
    # The admin sees everyone's keys, with their owners ("my keys" or "all keys").
    admin.goto("/keys?owner=all")
    expect(admin.locator("td[data-label='Owner']").filter(has_text=ADMIN)).to_have_count(1)
    expect(admin.get_by_role("link", name="All keys")).to_have_attribute("aria-current", "page")
    web.shoot(admin, "keys-all")


def test_7_a_cross_origin_form_post_is_refused(journey_web: Web, server: ConsoleServer) -> None:
    """A page of another origin (a port of the same host: same-site, so the browser
    even attaches the SameSite=Lax session cookie) posts a form to the console and to
    the API: both are refused, and no key is made."""
    web = journey_web
    web.allow(r"Failed to load resource: the server responded with a status of 40[13]")
    assert People.member_state is not None
    context = web.context(storage_state=People.member_state)
    evil = f"http://127.0.0.1:{free_port()}"
    html = f"""<!doctype html><title>evil</title>
      <form id="console" method="post" action="{server.url}/keys/new">
        <input name="name" value="planted"><input name="preset" value="none"><input name="csrf_token" value="guess">
      </form>
      <form id="api" method="post" action="{server.url}/api/v1/keys" enctype="text/plain">
        <input name='{{"name": "planted-api", "x": "' value='"}}'>
      </form>"""
    context.route(evil + "/**", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    page = context.new_page()
    page.goto(evil + "/page")
    with page.expect_navigation():
        page.evaluate("document.getElementById('console').submit()")
    expect(page.locator(".error-box")).to_contain_text("another site")
    page.goto(evil + "/page")
    with page.expect_navigation():
        page.evaluate("document.getElementById('api').submit()")
    assert page.url.startswith(server.url + "/api/v1/keys")
    refused = page.evaluate("JSON.parse(document.body.innerText)")
    assert refused["error"]["code"] == "csrf_failed", refused
    names = {k["name"] for k in server.cli_json("keys", "list", "--all")}
    assert not names & {"planted", "planted-api"}


def test_the_account_pages_at_desktop_and_phone_width(journey_web: Web, server: ConsoleServer) -> None:
    web = journey_web
    assert People.member_state is not None
    page = web.context(storage_state=People.member_state).new_page()
    page.goto("/account")
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.locator("img.qr")).to_be_visible()
    web.shoot(page, "totp-enrol")
    signed_out = web.page()
    for path, name in (("/reset-password", "reset"), ("/register", "register-closed")):
        signed_out.goto(path)
        web.shoot(signed_out, name)
