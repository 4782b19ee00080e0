"""Browser fixtures for the console tests: Debian's headless Chromium driven by
Playwright for Python, against a real ``agentrouter serve --workers 2`` on a real
SQLite file.

* ``browser``: one Chromium per test module, launched from ``/usr/bin/chromium``
  (``CHROMIUM`` overrides it); Playwright cannot download its own browsers here, and
  ``scripts/install-services`` installs Debian's. (Per module, not per session: the
  sync API runs an event loop in the main thread while it is open, and the asyncio
  tests of later modules need that thread free of one.)
* ``console_server``: one real server for the session (``ConsoleServer``; its data
  directory, log and CLI), started like an operator would.
* ``web``: a ``Web`` per test: browser contexts (each its own cookie jar: a "device")
  that fail the test on any console error, uncaught page error or
  Content-Security-Policy violation, and ``shoot(page, name)``, which saves the page
  at 1280×800 and 375×812 into ``test-artifacts/screenshots/`` (gitignored) and fails
  if the phone-width page scrolls sideways or an input has no label.

A CSP violation is caught in the page itself: an init script (Playwright adds it
outside the page's CSP) listens for ``securitypolicyviolation`` and reports it
through an exposed binding. Chromium also logs each violation as a console error,
so either way the test fails.

A test that expects a console error (a 404 page logs "Failed to load resource")
allows it with ``web.allow(pattern)``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway

__all__ = ["SCREENSHOTS", "ConsoleServer", "Web"]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
LOCALE = "en-GB"
TIMEZONE = "Asia/Kolkata"
"""A zone at +05:30 (no daylight saving): local times differ visibly from UTC."""

_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
_UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
  .filter(e => e.type !== "hidden" && !(e.labels && e.labels.length) && !e.getAttribute("aria-label"))
  .map(e => e.name || e.id || e.outerHTML.slice(0, 60))"""
_WATCH = """
document.addEventListener("securitypolicyviolation", function (e) {
  window.__agentrouterCsp(e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
    " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is not installed: run scripts/install-services (scripts/setup --test does)")
    return path


class ConsoleServer(Gateway):
    """``agentrouter serve --workers 2`` with the built-in mock provider, on its own
    data directory (SQLite), for the console's browser tests."""

    def __init__(self, data_dir: Path, config: Path, *, env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, config, workers=2)
        # The address in mailed links and the origin the same-site checks compare with.
        self.env["AGENTROUTER_PUBLIC_URL"] = self.url
        self.env.update(env or {})

    def manage_key(self, name: str = "operator") -> dict[str, Any]:
        return self.cli_json("keys", "create", "--name", name, "--scope", "manage")  # type: ignore[no-any-return]


def start_console_server(tmp: Path, toml: str = "", env: dict[str, str] | None = None) -> ConsoleServer:
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = tmp / "agentrouter.toml"
    config.write_text(toml)
    return ConsoleServer(data_dir, config, env={"AGENTROUTER_USAGE_FLUSH_INTERVAL": "0.2", **(env or {})}).start()


class Web:
    """Browser contexts for one test, and what they reported."""

    def __init__(self, browser: Any, base_url: str, test_name: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.problems: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        self.contexts: list[Any] = []
        self.shots: list[Path] = []

    def allow(self, pattern: str) -> None:
        """Console errors matching ``pattern`` (a regex) do not fail the test."""
        self.allowed.append(re.compile(pattern))

    def _report(self, kind: str, text: str, where: str) -> None:
        if kind == "console" and any(p.search(text) for p in self.allowed):
            return
        self.problems.append(f"{kind} on {where}: {text}")

    def context(self, **options: Any) -> Any:
        """A new browser context (a device: its own cookies), watched."""
        options.setdefault("base_url", self.base_url)
        options.setdefault("viewport", DESKTOP)
        options.setdefault("locale", LOCALE)
        options.setdefault("timezone_id", TIMEZONE)
        context = self.browser.new_context(**options)
        context.expose_binding(
            "__agentrouterCsp", lambda source, text: self._report("CSP violation", text, source["page"].url)
        )
        context.add_init_script(_WATCH)

        def watch(page: Any) -> None:
            page.on(
                "console",
                lambda msg: msg.type == "error" and self._report("console", msg.text, page.url),
            )
            page.on("pageerror", lambda exc: self._report("page error", str(exc), page.url))

        context.on("page", watch)
        self.contexts.append(context)
        return context

    def page(self, **options: Any) -> Any:
        return self.context(**options).new_page()

    def shoot(self, page: Any, name: str) -> None:
        """The page as PNGs at desktop and phone width; fails if at phone width the page
        itself scrolls sideways (wide tables scroll in their own box)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        size = page.viewport_size or DESKTOP
        for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            page.evaluate(_FRAMES)  # the charts redraw at the new width in the next frame
            path = SCREENSHOTS / f"{name}-{label}.png"
            page.screenshot(path=str(path), full_page=True)
            self.shots.append(path)
            if label == "phone":
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{name}: at 375 px the page is {overflow} px too wide"
        unlabelled = page.evaluate(_UNLABELLED)
        assert not unlabelled, f"{name}: inputs without a label: {unlabelled}"
        page.set_viewport_size(size)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    server = start_console_server(tmp_path_factory.mktemp("console"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web(browser: Any, console_server: ConsoleServer, request: pytest.FixtureRequest) -> Iterator[Web]:
    w = Web(browser, console_server.url, request.node.name)
    try:
        yield w
    finally:
        w.close()
    assert not w.problems, "the browser reported:\n" + "\n".join(w.problems)
