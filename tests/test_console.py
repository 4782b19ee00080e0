"""The console served by the gateway (as ``server.load_app`` mounts it), driven through
ASGI: routing beside ``/v1`` and ``/api``, the security headers, hashed static files,
sign-in redirects, and the key pages as a client of ``/api/v1`` (here with a
management key; people and sessions are the accounts routes'). The same pages in a
real browser: ``tests/test_console_browser.py``."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from agentrouter.console import build_site
from agentrouter.console.app import STATIC, Viewer
from agentrouter.console.http import CSP, safe_next
from agentrouter.console.render import TEMPLATES
from agentrouter.gateway.app import Gateway, create_app
from tests.gateway_fixtures import Reply, call, settings_for

HOST = "console.test:8080"
ORIGIN = "http://" + HOST
EMPTY_LIST = dict(
    keys=[],
    total=0,
    labels=[],
    search="",
    sort="created",
    sorts={},
    filtered=False,
    errors={},
    without_label=str,
    with_label=str,
    whose="me",
    owners={},
    tabs=False,
    tab_url=str,
)
FORM = {"content-type": "application/x-www-form-urlencoded", "origin": ORIGIN, "host": HOST}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = settings_for(tmp_path / "data", AGENTROUTER_USAGE_WRITER="inline", AGENTROUTER_MONITOR_ENABLED="false")
    gateway = create_app(settings, fallback=build_site(settings))
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()


@pytest.fixture
async def manage(app: Gateway) -> dict[str, str]:
    """The headers of a browser that sends a management key (the operator)."""
    created = await app.core.keys.create(name="operator", scope="manage")
    return {"authorization": f"Bearer {created.key}", "host": HOST}


def text(reply: Reply) -> str:
    return reply.body.decode()


async def post(app: Gateway, path: str, headers: dict[str, str], **fields: str) -> Reply:
    return await call(app, "POST", path, headers={**headers, **FORM}, body=urlencode(fields).encode())


def assert_security_headers(reply: Reply) -> None:
    h = reply.headers
    assert h["content-security-policy"] == CSP.decode()
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "same-origin"
    assert h["x-content-type-options"] == "nosniff"


# -- serving -------------------------------------------------------------------------


async def test_the_console_takes_what_is_neither_v1_nor_api(app: Gateway) -> None:
    v1 = await call(app, "POST", "/v1/chat/completions", body=b"{}")
    assert v1.status == 401 and v1.json()["error"]["code"] == "invalid_api_key"  # the gateway's, untouched
    api = await call(app, "GET", "/api/v1/keys")
    assert api.status == 401 and set(api.json()) == {"error"}  # the management API's
    assert (await call(app, "GET", "/api/openapi.json")).status == 200
    missing = await call(app, "GET", "/chat/completions")  # an SDK without /v1: still told so
    assert missing.status == 404 and "/v1/chat/completions" in missing.json()["error"]["message"]
    home = await call(app, "GET", "/")
    assert home.status == 303 and home.headers["location"] == "/sign-in"
    nothing = await call(app, "GET", "/no/such/page")
    assert nothing.status == 404 and nothing.headers["content-type"] == "text/html; charset=utf-8"
    assert_security_headers(nothing)
    assert (await call(app, "GET", "/healthz")).status == 200


@pytest.mark.parametrize("path", ["/sign-in", "/keys", "/no-page", "/static/app.css"])
async def test_every_answer_carries_the_security_headers(app: Gateway, path: str) -> None:
    reply = await call(app, "GET", path)
    assert_security_headers(reply)
    if reply.headers.get("content-type", "").startswith("text/html"):
        assert reply.headers["cache-control"] == "no-store"


async def test_the_csp_is_strict(app: Gateway) -> None:
    policy = dict(d.strip().split(" ", 1) for d in CSP.decode().split(";"))
    assert policy == {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
    }


async def test_static_files_have_hashed_urls_and_are_cached_for_good(app: Gateway) -> None:
    page = text(await call(app, "GET", "/sign-in"))
    urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
    assert {re.sub(r"\.[0-9a-f]{12}\.", ".", u) for u in urls} >= {
        "/static/app.css",
        "/static/app.js",
        "/static/favicon.svg",
    }
    for url in urls:
        reply = await call(app, "GET", url)
        assert reply.status == 200, url
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = reply.headers["etag"]
        assert etag.strip('"') in url  # the URL names the content
        again = await call(app, "GET", url, headers={"if-none-match": etag})
        assert again.status == 304 and again.body == b""
        head = await call(app, "HEAD", url)
        assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(len(reply.body))
    css = next(u for u in urls if u.endswith(".css"))
    assert (await call(app, "GET", css)).headers["content-type"] == "text/css; charset=utf-8"
    stale = re.sub(r"\.[0-9a-f]{12}\.", ".000000000000.", css)
    assert (await call(app, "GET", stale)).status == 404
    assert (await call(app, "GET", "/static/app.css")).status == 404  # only under the hashed name


def test_no_inline_script_or_style_anywhere() -> None:
    """The CSP forbids them; a template or script that relied on one would break."""
    for path in TEMPLATES.iterdir():
        source = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", source), path.name
        assert not re.search(r"\sstyle=", source), path.name
        assert "<style" not in source, path.name
        assert not re.search(r"\son[a-z]+=", source), path.name
        assert "javascript:" not in source, path.name
    for path in STATIC.glob("*.js"):
        source = path.read_text()
        assert ".style." not in source and "innerHTML" not in source and "eval(" not in source, path.name


async def test_a_page_that_needs_a_user_sends_to_sign_in_and_back(app: Gateway) -> None:
    reply = await call(app, "GET", "/keys/key_abc", query=b"range=7d")
    assert reply.status == 303
    assert reply.headers["location"] == "/sign-in?next=/keys/key_abc%3Frange%3D7d"
    signin = await call(app, "GET", "/sign-in", query=b"next=%2Fkeys%2Fkey_abc%3Frange%3D7d")
    assert signin.status == 200 and 'name="next" value="/keys/key_abc?range=7d"' in text(signin)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/keys/key_1?range=7d", "/keys/key_1?range=7d"),
        ("//evil.example/", "/keys"),
        ("/\\evil.example/", "/keys"),
        ("https://evil.example/", "/keys"),
        ("/ok\r\nSet-Cookie: x=1", "/keys"),
        ("", "/keys"),
        (None, "/keys"),
    ],
)
def test_sign_in_only_returns_to_a_page_of_this_site(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


# -- the key pages -------------------------------------------------------------------


async def key_ids(app: Gateway, headers: dict[str, str], query: bytes = b"") -> list[str]:
    page = await call(app, "GET", "/keys", headers=headers, query=query)
    assert page.status == 200, text(page)
    return re.findall(r'data-key-id="([^"]+)"', text(page))


async def test_the_empty_key_list_says_what_to_do_first(app: Gateway) -> None:
    # (A caller with a management key always sees that key: the page as a new user sees it.)
    site = app._fallback
    assert site is not None
    viewer = Viewer(user={"email": "new@example.com", "role": "member", "email_verified": True})
    page = site.console.page(None, "keys.html", viewer, **EMPTY_LIST).body.decode()
    assert "No keys yet" in page and 'href="/keys/new"' in page and "shown only once" in page


async def test_create_shows_the_key_once_with_snippets(app: Gateway, manage: dict[str, str]) -> None:
    form = await call(app, "GET", "/keys/new", headers=manage)
    assert form.status == 200
    page = text(form)
    for label in ("60 / 60 s", "100 / 60 s", "1000 / 3600 s", "10000 / 86400 s", "No limit"):
        assert label in page
    for name in ("name", "requests", "interval", "metadata", "expires"):
        assert f'<label for="f-{name}">' in page, name  # every input has its label

    created = await post(
        app, "/keys/new", manage, name="mobile", preset="100/60", metadata='{"env": "prod", "team": "core"}'
    )
    assert created.status == 201, text(created)
    page = text(created)
    raw = re.search(r'id="new-key"[^>]*value="(sk-ar-[A-Za-z0-9]{38})"', page)
    assert raw is not None
    key = raw.group(1)
    assert "will not be shown again" in page
    page = html.unescape(page)
    assert f'base_url="{ORIGIN}/v1"' in page  # the OpenAI SDK snippet
    assert f'base_url="{ORIGIN}"' in page  # the Anthropic SDK snippet
    assert f"AGENTROUTER_API_KEY={key}" in page and f"curl {ORIGIN}/v1/chat/completions" in page
    assert created.headers["cache-control"] == "no-store"

    (row,) = [r for r in await app.core.keys.list() if r.name == "mobile"]
    assert (row.requests, row.interval, row.metadata) == (100, 60.0, {"env": "prod", "team": "core"})
    listing = text(await call(app, "GET", "/keys", headers=manage))
    assert key not in listing and key[:12] in listing  # the prefix only, from now on
    assert "100 / 60 s" in listing and "no limit" in listing  # mobile's, and the operator key's
    detail = text(await call(app, "GET", f"/keys/{row.id}", headers=manage))
    assert key not in detail and "data-chart=" in detail


async def test_form_errors_are_shown_next_to_their_field(app: Gateway, manage: dict[str, str]) -> None:
    bad_json = await post(app, "/keys/new", manage, name="x", preset="custom", metadata="{nope")
    assert bad_json.status == 200  # the form again (a 4xx would be a console error in the browser)
    page = text(bad_json)
    assert re.search(r'id="e-metadata"[^>]*>Not valid JSON', page)
    assert "{nope" in page and 'value="x"' in page  # what was typed is kept
    # The API's own validation, with the field it names.
    too_many = await post(app, "/keys/new", manage, preset="custom", requests="0", interval="60")
    assert too_many.status == 200
    assert re.search(r'id="e-requests"[^>]*>rate_limit.requests: ', text(too_many))
    not_object = await post(app, "/keys/new", manage, preset="none", metadata="[1, 2]")
    assert re.search(r'id="e-metadata"[^>]*>Labels are a JSON object', text(not_object))
    assert len(await app.core.keys.list()) == 1  # nothing was created


async def test_names_and_labels_are_escaped(app: Gateway, manage: dict[str, str]) -> None:
    await app.core.keys.create(name="<script>alert(1)</script>", metadata={"<b>": '"><img src=x>'})
    page = text(await call(app, "GET", "/keys", headers=manage))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x>" not in page and "<b>" not in page


async def test_filter_search_and_sort(app: Gateway, manage: dict[str, str]) -> None:
    a = (await app.core.keys.create(name="alpha", metadata={"env": "prod"})).row.id
    b = (await app.core.keys.create(name="beta", metadata={"env": "dev"})).row.id
    c = (await app.core.keys.create(name="gamma", metadata={"env": "prod", "team": "x"})).row.id
    assert await key_ids(app, manage, b"label=env%3Dprod") == [c, a]  # newest first
    assert await key_ids(app, manage, b"label=env%3Dprod&label=team") == [c]
    assert await key_ids(app, manage, b"q=ET") == [b]  # by name, any case
    by_name = await key_ids(app, manage, b"sort=name")
    assert by_name[:3] == [a, b, c]
    none = text(await call(app, "GET", "/keys", headers=manage, query=b"q=zzz"))
    assert "No key matches" in none


async def test_edit_rotate_and_delete(app: Gateway, manage: dict[str, str]) -> None:
    created = await app.core.keys.create(name="old", requests=10, interval=60)
    key_id = created.row.id
    saved = await post(
        app, f"/keys/{key_id}", manage, name="new", preset="1000/3600", metadata='{"a": "b"}', expires="keep"
    )
    assert saved.status == 303 and saved.headers["location"] == f"/keys/{key_id}"
    row = await app.core.keys.get(key_id)
    assert (row.name, row.requests, row.interval, row.metadata) == ("new", 1000, 3600.0, {"a": "b"})
    shown = await call(app, "GET", f"/keys/{key_id}", headers={**manage, "cookie": saved.headers["set-cookie"]})
    assert "Saved." in text(shown)

    rotated = await post(app, f"/keys/{key_id}/rotate", manage, grace="3600")
    assert rotated.status == 201
    assert "Key rotated" in text(rotated) and "keeps working for 3600 s" in text(rotated)
    new_id = (await app.core.keys.get(key_id)).rotated_to
    assert new_id is not None

    confirm = text(await call(app, "GET", f"/keys/{new_id}/delete", headers=manage))
    assert "Requests using this key will fail immediately" in confirm and "new" in confirm
    deleted = await post(app, f"/keys/{new_id}/delete", manage)
    assert deleted.status == 303 and deleted.headers["location"] == "/keys"
    assert "Requests using this key now fail" in deleted.headers["set-cookie"].replace("%20", " ")
    assert (await app.core.keys.get(new_id)).state == "deleted"
    gone = await call(app, "GET", f"/keys/{new_id}", headers=manage)
    assert gone.status == 404 and "deleted" in text(gone)


async def test_an_unknown_key_is_the_consoles_404(app: Gateway, manage: dict[str, str]) -> None:
    reply = await call(app, "GET", "/keys/key_0000000000000000", headers=manage)
    assert reply.status == 404 and reply.headers["content-type"].startswith("text/html")


async def test_usage_range_errors_are_shown_by_their_field(app: Gateway, manage: dict[str, str]) -> None:
    key_id = (await app.core.keys.create(name="k")).row.id
    page = await call(app, "GET", f"/keys/{key_id}", headers=manage, query=b"range=90d&by=minute")
    assert page.status == 200
    assert re.search(r'id="e-by"[^>]*>by: .*too many', text(page))


async def test_alerts_page(app: Gateway, manage: dict[str, str]) -> None:
    key_id = (await app.core.keys.create(name="watched")).row.id
    await app.core.store.record_alert(
        key_id=key_id,
        kind="failure_rate",
        subject="1700000000",
        evidence={
            "window_start": 1700000000.0,
            "window_end": 1700003600.0,
            "requests": 40,
            "failures": 30,
            "failures_4xx": 28,
            "failures_5xx": 2,
            "rate": 0.75,
            "baseline_rate": 0.02,
            "baseline_requests": 900,
            "threshold": 0.5,
        },
        now=app.core.now(),
        cooldown=0,
    )
    page = text(await call(app, "GET", "/alerts", headers=manage))
    assert "30 of 40 requests failed" in page and "75%" in page and "28 with a 4xx status" in page
    assert "watched" in page
    alert_id = re.search(r'action="/alerts/([^/]+)/ack"', page)
    assert alert_id is not None
    acked = await post(app, f"/alerts/{alert_id.group(1)}/ack", manage, next="/alerts")
    assert acked.status == 303 and acked.headers["location"] == "/alerts"
    assert "No open alerts" in text(await call(app, "GET", "/alerts", headers=manage))
