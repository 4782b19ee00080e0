"""Every 401 cause, seen through both SDKs and on the wire.

Missing header, malformed key (prefix, length, checksum), an unknown well-formed key,
a deleted key, an expired key and a rotated key after its grace period: each gives
the SDK's ``AuthenticationError``, the dialect's error body, nothing forwarded
upstream, and no message holding more of the key than its display prefix.
"""

from __future__ import annotations

import string
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from agentrouter._core import generate_key
from tests.e2e.conftest import Gateway, anthropic_error, assert_no_key_leak, openai_error, response_text
from tests.upstream_fake import FakeUpstream
from tests.waiting import until_sync

MESSAGES = [{"role": "user", "content": "Hello!"}]
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _other_char(c: str) -> str:
    return ALPHABET[(ALPHABET.index(c) + 1) % len(ALPHABET)]


def refused(gateway: Gateway, fake: FakeUpstream, raw_key: str, clients: Any) -> None:
    """Both SDKs and both header forms get 401 for ``raw_key``, with nothing forwarded or leaked."""
    mark = fake.mark()
    with pytest.raises(openai.AuthenticationError) as o_exc:
        clients("openai", raw_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = openai_error(o_exc.value.response, code="invalid_api_key")
    assert_no_key_leak(raw_key, str(o_exc.value), err["message"], response_text(o_exc.value.response))

    for kind in ("anthropic", "anthropic-x-api-key"):
        with pytest.raises(anthropic.AuthenticationError) as a_exc:
            clients(kind, raw_key).messages.create(model="claude-3-5-sonnet-20241022", max_tokens=8, messages=MESSAGES)
        err = anthropic_error(a_exc.value.response, type_="authentication_error")
        assert_no_key_leak(raw_key, str(a_exc.value), err["message"], response_text(a_exc.value.response))

    with httpx.Client(timeout=30.0) as http:
        # The other header form on each route, by hand.
        by_x = http.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES},
            headers={"x-api-key": raw_key},
        )
        by_bearer = http.post(
            gateway.url + "/v1/messages",
            json={"model": "claude-3-5-sonnet-20241022", "max_tokens": 8, "messages": MESSAGES},
            headers={"Authorization": f"Bearer {raw_key}", "anthropic-version": "2023-06-01"},
        )
    assert by_x.status_code == 401
    openai_error(by_x, code="invalid_api_key")
    assert by_bearer.status_code == 401
    anthropic_error(by_bearer, type_="authentication_error")
    assert_no_key_leak(raw_key, response_text(by_x), response_text(by_bearer))
    assert fake.since(mark) == [], "a refused request reached the upstream"


def test_missing_header(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    import httpx2

    def strip_auth(request: Any) -> None:
        request.headers.pop("authorization", None)
        request.headers.pop("x-api-key", None)

    mark = fake.mark()
    with httpx2.Client(event_hooks={"request": [strip_auth]}) as o_http, pytest.raises(openai.AuthenticationError) as o:
        clients("openai", "unused", http_client=o_http).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    openai_error(o.value.response, code="invalid_api_key")
    with (
        httpx2.Client(event_hooks={"request": [strip_auth]}) as a_http,
        pytest.raises(anthropic.AuthenticationError) as a,
    ):
        clients("anthropic", "unused", http_client=a_http).messages.create(
            model="claude-3-5-sonnet-20241022", max_tokens=8, messages=MESSAGES
        )
    anthropic_error(a.value.response, type_="authentication_error")
    with httpx.Client(timeout=30.0) as http:
        for headers in (
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"x-api-key": ""},
        ):
            resp = http.post(
                gateway.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}, headers=headers
            )
            assert resp.status_code == 401, headers
            openai_error(resp, code="invalid_api_key")
        resp = http.get(gateway.url + "/v1/models")
        assert resp.status_code == 401
    assert fake.since(mark) == []


def test_malformed_prefix(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    good = generate_key()
    refused(gateway, fake, "sk-xx-" + good[6:], clients)
    refused(gateway, fake, "sk-" + good[6:] + "abc", clients)


def test_malformed_length(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    good = generate_key()
    refused(gateway, fake, good + "A", clients)
    refused(gateway, fake, good[:-1], clients)


def test_malformed_checksum(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    good = generate_key()
    refused(gateway, fake, good[:-1] + _other_char(good[-1]), clients)
    # A changed character in the random part breaks the checksum too.
    refused(gateway, fake, good[:10] + _other_char(good[10]) + good[11:], clients)


def test_unknown_well_formed_key(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    refused(gateway, fake, generate_key(), clients)


def test_deleted_key(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    created = gateway.create_key(name="to-delete")
    clients("openai", created["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    gateway.cli("keys", "delete", created["id"], "--yes")
    refused(gateway, fake, created["key"], clients)


@pytest.mark.slow
def test_expired_key(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    # Valid first (a long expiry, so the request cannot race it), then one second left.
    created = gateway.create_key(name="short-lived", expires_in="1h")
    clients("openai", created["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    expires_at = gateway.cli_json("keys", "update", created["id"], "--expires-in", "1s")["expires_at"]
    until_sync(lambda: time.time() > expires_at, "the key's expiry", poll=0.05)
    refused(gateway, fake, created["key"], clients)


@pytest.mark.slow
def test_rotated_key_after_grace(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    old = gateway.create_key(name="rotating")
    clients("openai", old["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # A grace period far longer than the two requests made within it.
    new = gateway.cli_json("keys", "rotate", old["id"], "--grace", "4s")
    assert new["key"] != old["key"] and new["key"].startswith("sk-ar-")
    # Within the grace period both work.
    clients("openai", old["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    clients("openai", new["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    grace_ends = gateway.cli_json("keys", "show", old["id"])["expires_at"]
    until_sync(lambda: time.time() > grace_ends, "the end of the grace period", poll=0.05)
    refused(gateway, fake, old["key"], clients)
    completion = clients("openai", new["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content


def test_rotate_without_grace_refuses_old_key_at_once(gateway: Gateway, fake: FakeUpstream, clients: Any) -> None:
    old = gateway.create_key(name="rotate-now")
    clients("openai", old["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    new = gateway.cli_json("keys", "rotate", old["id"])
    refused(gateway, fake, old["key"], clients)
    clients("anthropic", new["key"]).messages.create(
        model="claude-3-5-sonnet-20241022", max_tokens=8, messages=MESSAGES
    )
