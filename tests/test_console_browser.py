"""The console in a real headless Chromium against ``agentrouter serve --workers 2``
(SQLite file, the mock provider), with the real OpenAI SDK calling ``/v1``.

These drive the key pages as the instance's operator (a management key sent by the
browser, as a proxy in front of the console could): the pages are the same for a
signed-in person, whose journeys are in ``tests/test_console_journeys.py``. Every
test fails on a console error or a CSP violation (``tests/browser.py``), and the
pages are captured at desktop and phone width.
"""

from __future__ import annotations

import re

import openai
import pytest
from playwright.sync_api import expect

from tests.browser import ConsoleServer, Web
from tests.waiting import until_sync


@pytest.fixture
def operator(console_server: ConsoleServer) -> dict[str, str]:
    key = console_server.manage_key()
    return {"authorization": f"Bearer {key['key']}"}


def test_the_fixture_catches_csp_violations_and_console_errors(web: Web) -> None:
    page = web.page()
    page.goto("/sign-in")
    with pytest.raises(Exception):  # noqa: B017 - Playwright's error for a script the page refused
        page.add_script_tag(content="window.inlineRan = true;")
    assert page.evaluate("window.inlineRan === undefined")
    page.evaluate("console.error('boom')")
    until_sync(lambda: len(web.problems) >= 2, "the reports")
    assert any(p.startswith("CSP violation") and "script-src" in p for p in web.problems), web.problems
    assert any("boom" in p for p in web.problems), web.problems
    web.problems.clear()


def test_create_copy_call_see_and_delete(web: Web, console_server: ConsoleServer, operator: dict[str, str]) -> None:
    """Journeys 2 and 3 of the issue, as the operator: create with the 100 / 60 s preset
    and labels, copy the key from the page, call /v1 with the OpenAI SDK, see the
    request in the list and the chart, delete through the dialog, and the SDK's next
    call is refused."""
    context = web.context(extra_http_headers=operator, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto("/keys")
    page.get_by_role("link", name="Create API key").first.click()
    page.wait_for_url("**/keys/new")
    page.get_by_label("Name (optional)").fill("journey")
    page.get_by_label("100 / 60 s").check()
    assert page.get_by_label("Request limit (optional)").input_value() == "100"  # the preset fills them in
    assert page.get_by_label("Reset interval in seconds (optional)").input_value() == "60"
    labels = page.get_by_label("Labels (metadata, JSON, optional)")
    labels.fill('{"environment": "production", "team": ')
    error = page.locator("#e-metadata")
    expect(error).to_be_visible()  # checked in place, as it is typed
    expect(error).to_contain_text("Not valid JSON")
    labels.fill('{"environment": "production", "team": "engineering"}')
    expect(error).to_be_hidden()
    web.shoot(page, "key-new")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/keys/new")
    assert page.get_by_role("heading", name="Key created").is_visible()
    assert "will not be shown again" in page.inner_text(".shown-once")
    page.locator(".shown-once").get_by_role("button", name="Copy").click()
    expect(page.locator("[data-copied-for='#new-key']")).to_have_text("Copied to the clipboard.")
    key = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(r"sk-ar-[A-Za-z0-9]{38}", key) and key == page.input_value("#new-key")
    snippet = page.inner_text("#snippet-openai")
    assert f'base_url="{console_server.url}/v1"' in snippet and key in snippet
    web.shoot(page, "key-created")

    client = openai.OpenAI(api_key=key, base_url=console_server.url + "/v1", max_retries=0, timeout=30.0)
    try:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}])
        assert reply.choices[0].message.content

        # The list shows the use (written in batches: look again until it is there).
        def used() -> bool:
            page.goto("/keys?q=journey")
            return bool(page.locator("tbody tr td[data-label='Requests']").first.inner_text() == "1")

        until_sync(used, "the request in the key list", poll=0.2)
        row = page.locator("tbody tr").first
        assert row.locator("td[data-label='Rate limit']").inner_text() == "100 / 60 s"
        last_used = row.locator("td[data-label='Last used'] time")
        assert last_used.get_attribute("title").endswith(" UTC")  # local time shown, UTC on hover
        assert "UTC" not in last_used.inner_text()
        chips = [
            (c.locator(".chip-name").inner_text(), c.locator(".chip-value").inner_text())
            for c in row.locator(".chip").all()
        ]
        assert chips == [("environment", "production"), ("team", "engineering")]
        web.shoot(page, "keys")

        # The chart shows the request, in the current hour.
        row.get_by_role("link", name="journey").click()
        page.wait_for_url(re.compile(r".*/keys/key_[A-Za-z0-9_-]+$"))
        bars = page.locator("#chart-requests .series.s0 .bar")
        assert bars.count() == 1
        last = page.locator("#chart-requests .hit").last
        assert "Requests 1, Failures 0" in last.get_attribute("aria-label")
        assert "gpt-4o" in page.locator("table.models").inner_text()
        web.shoot(page, "key-detail")

        # Delete through the dialog that names the key.
        page.get_by_role("link", name="Delete key…").click()
        dialog = page.get_by_role("dialog")
        assert dialog.is_visible()
        text = dialog.inner_text()
        assert "journey" in text and "Requests using this key will fail immediately" in text
        web.shoot(page, "key-delete-dialog")
        dialog.get_by_role("button", name="Delete this key").click()
        page.wait_for_url("**/keys")
        assert "Deleted journey" in page.inner_text(".flash")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}])
    finally:
        client.close()


def test_the_key_pages_work_without_javascript(
    web: Web, console_server: ConsoleServer, operator: dict[str, str]
) -> None:
    page = web.page(extra_http_headers=operator, java_script_enabled=False)
    page.goto("/keys/new")
    page.get_by_label("Name (optional)").fill("plain form")
    page.get_by_label("1000 / 3600 s").check()
    page.get_by_label("Labels (metadata, JSON, optional)").fill('{"env": ')
    page.get_by_role("button", name="Create").click()
    assert page.locator("#e-metadata").inner_text().startswith("Not valid JSON")  # from the server this time
    page.get_by_label("Labels (metadata, JSON, optional)").fill('{"env": "dev"}')
    page.get_by_role("button", name="Create").click()
    assert page.get_by_role("heading", name="Key created").is_visible()
    assert page.locator(".shown-once button").is_hidden()  # no copy button without a script
    created = page.input_value("#new-key")
    assert created.startswith("sk-ar-")
    page.get_by_role("link", name="Go to the key's page").click()
    assert "1,000 / 3600 s" in page.inner_text(".summary")
    page.get_by_role("link", name="Delete key…").click()  # the confirmation is a page of its own
    page.wait_for_url("**/delete")
    assert "Requests using this key will fail immediately" in page.inner_text("main")
    page.get_by_role("button", name="Delete this key").click()
    page.wait_for_url("**/keys")
    assert "Deleted plain form" in page.inner_text(".flash")


def test_every_key_page_at_desktop_and_phone_width(
    web: Web, console_server: ConsoleServer, operator: dict[str, str]
) -> None:
    created = console_server.create_key(name="screens", metadata={"environment": "staging"})
    page = web.page(extra_http_headers=operator)
    for path, name in [
        ("/keys", "keys-list"),
        (f"/keys/{created['id']}", "key-detail-empty"),
        (f"/keys/{created['id']}?range=30d", "key-detail-30d"),
        (f"/keys/{created['id']}/delete", "key-delete-page"),
        ("/alerts", "alerts"),
        ("/alerts?status=all", "alerts-all"),
    ]:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        web.shoot(page, name)
    signed_out = web.page()
    signed_out.goto("/keys")
    assert signed_out.url.endswith("/sign-in?next=/keys")
    # No OAuth provider is configured on this server: no GitHub or Google button.
    expect(signed_out.get_by_role("link", name=re.compile("Sign in with"))).to_have_count(0)
    web.shoot(signed_out, "sign-in-password-only")


def test_the_key_pages_by_keyboard(web: Web, console_server: ConsoleServer, operator: dict[str, str]) -> None:
    page = web.page(extra_http_headers=operator)
    page.goto("/keys/new")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.get_by_label("Name (optional)").focus()
    page.keyboard.type("by keyboard")
    page.keyboard.press("Tab")  # to the presets: a radio group, at its checked one ("Custom")
    expect(page.get_by_label("Custom")).to_be_focused()
    page.keyboard.press("ArrowRight")  # the arrow keys choose (and wrap around)
    expect(page.get_by_label("60 / 60 s")).to_be_checked()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label("100 / 60 s")).to_be_checked()
    assert page.get_by_label("Request limit (optional)").input_value() == "100"
    page.get_by_label("Name (optional)").focus()
    page.keyboard.press("Enter")  # submits the form
    expect(page.get_by_role("heading", name="Key created")).to_be_visible()
    page.get_by_role("link", name="Go to the key's page").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("by keyboard"))).to_be_visible()
    # The delete dialog opens from the keyboard and Escape closes it, focus back on its opener.
    opener = page.get_by_role("link", name="Delete key…")
    opener.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    # A chart is read with the arrow keys.
    page.locator("#chart-requests .hit[tabindex='0']").focus()
    page.keyboard.press("End")
    expect(page.locator("#chart-requests .chart-readout")).to_contain_text("Requests 0, Failures 0")


def test_a_missing_page_is_a_page(web: Web) -> None:
    web.allow(r"Failed to load resource: the server responded with a status of 404")
    page = web.page()
    response = page.goto("/nothing/here")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    web.shoot(page, "not-found")
