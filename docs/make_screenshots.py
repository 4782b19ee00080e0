"""Make the console screenshots of the README (docs/console-*.png): a real server on a
temporary data directory, the first admin, three keys called with the OpenAI SDK.

    .venv/bin/python docs/make_screenshots.py
"""

import asyncio
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import openai
from playwright.sync_api import sync_playwright
from tests.browser import start_console_server
from tests.accounts_helpers import STRONG
from tests.conftest import settings_on
from agentrouter.core import Core

tmp = Path(tempfile.mkdtemp())
server = start_console_server(tmp)
try:
    async def make():
        core = await Core.from_settings(settings_on(server.data_dir, secret=None, AGENTROUTER_PUBLIC_URL=server.url))
        try:
            return await core.accounts.prepare_setup()
        finally:
            await core.close()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        link = pool.submit(asyncio.run, make()).result()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium")
        ctx = b.new_context(base_url=server.url, viewport={"width": 1100, "height": 720}, locale="en-GB", timezone_id="Europe/Berlin")
        page = ctx.new_page()
        page.goto(link)
        page.get_by_label("Email").fill("ada@example.com")
        page.get_by_label("Your name (optional)").fill("Ada")
        page.get_by_label("Password").fill(STRONG)
        page.get_by_role("button", name="Create admin account").click()
        page.wait_for_url("**/keys")
        keys = {}
        for name, preset, meta in [("mobile app", "100/60", '{"environment": "production", "team": "mobile"}'),
                                   ("nightly batch", "10000/86400", '{"environment": "production", "team": "data"}'),
                                   ("dev laptop", "60/60", '{"environment": "development"}')]:
            page.goto("/keys/new")
            page.get_by_label("Name (optional)").fill(name)
            page.locator(f"input[name=preset][value='{preset}']").check()
            page.get_by_label("Labels (metadata, JSON, optional)").fill(meta)
            page.get_by_role("button", name="Create").click()
            keys[name] = page.input_value("#new-key")
        for name, n in [("mobile app", 14), ("nightly batch", 6), ("dev laptop", 3)]:
            c = openai.OpenAI(api_key=keys[name], base_url=server.url + "/v1", max_retries=0)
            for i in range(n):
                c.chat.completions.create(model="gpt-4o" if i % 3 else "gpt-4o-mini", messages=[{"role": "user", "content": "Hello " * (i + 1)}])
            c.close()
        time.sleep(2)  # usage is written in batches
        page.goto("/keys")
        page.screenshot(path=str(ROOT / "docs" / "console-keys.png"))
        page.get_by_role("link", name="mobile app").click()
        page.locator("#usage-h").scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, document.getElementById('usage-h').offsetTop - 10)")
        page.focus("#chart-requests .hit[tabindex='0']")
        page.keyboard.press("End")
        page.screenshot(path=str(ROOT / "docs" / "console-key-usage.png"))
        b.close()
finally:
    server.stop()
