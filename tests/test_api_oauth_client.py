"""The OAuth client (``agentrouter.api.oauth``) against the fake GitHub and Google on
loopback: the code flow with state, PKCE and (Google) nonce and ID-token checks, and
each way a callback is refused. The whole flow through ``agentrouter serve`` is in
``test_api_oauth_e2e.py``."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentrouter._core import Digester
from agentrouter.api.oauth import ExternalIdentity, FlowState, OAuthError, OAuthFlows, ProviderConfig, safe_next
from tests.oauth_fakes import CLIENT_ID, CLIENT_SECRET, Account, FakeGitHub, FakeGoogle, s256

BASE = "http://127.0.0.1:9"  # the gateway's public URL (never contacted: the flow is driven by hand)


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.redirect_uris = {BASE + "/api/v1/auth/oauth/github/callback"}
        yield fake


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        fake.redirect_uris = {BASE + "/api/v1/auth/oauth/google/callback"}
        yield fake


@pytest.fixture
def flows(github: FakeGitHub, google: FakeGoogle) -> OAuthFlows:
    github.account = google.account = None
    google.tamper.clear()
    github.misbehave.clear()
    google.misbehave.clear()
    providers = {
        "github": ProviderConfig(
            name="github",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authorize_url=github.url + "/login/oauth/authorize",
            access_token_url=github.url + "/login/oauth/access_token",
            api_base_url=github.api_url,
        ),
        "google": ProviderConfig(
            name="google", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, server_metadata_url=google.discovery_url
        ),
    }
    return OAuthFlows(providers, Digester(b"x" * 32), base_url=BASE)


async def at_provider(flows: OAuthFlows, flow: FlowState) -> dict[str, str]:
    """Send the browser to the provider's authorize URL; the callback's query."""
    url = await flows.authorization_url(flow)
    async with httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(flows.callback_url(flow.provider) + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def sign_in(flows: OAuthFlows, provider: str) -> ExternalIdentity:
    flow, cookie, _ = flows.new_state(provider, "/keys", None)  # type: ignore[arg-type]
    query = await at_provider(flows, flow)
    checked = flows.read_state(provider, cookie, query["state"])
    assert checked.next == "/keys"
    return await flows.identity(checked, query)


async def test_github_flow_sends_pkce_and_reads_the_verified_primary_email(
    flows: OAuthFlows, github: FakeGitHub
) -> None:
    github.account = Account(subject="4242", email="Octo@Example.com", name="Octo Cat", login="octo")
    identity = await sign_in(flows, "github")
    assert identity == ExternalIdentity(
        provider="github", subject="4242", email="Octo@Example.com", email_verified=True, name="Octo Cat", login="octo"
    )
    sent = github.seen.authorize[-1]
    assert sent["code_challenge_method"] == "S256" and sent["client_id"] == CLIENT_ID
    assert sent["redirect_uri"] == BASE + "/api/v1/auth/oauth/github/callback"
    token_request = github.seen.token[-1]
    assert s256(token_request["code_verifier"]) == sent["code_challenge"]
    assert token_request["client_secret"] == CLIENT_SECRET


async def test_github_unverified_email_is_reported_unverified(flows: OAuthFlows, github: FakeGitHub) -> None:
    github.account = Account(subject="77", email="someone@example.com", email_verified=False)
    identity = await sign_in(flows, "github")
    assert identity.email == "someone@example.com" and identity.email_verified is False


async def test_google_flow_validates_the_id_token(flows: OAuthFlows, google: FakeGoogle) -> None:
    google.account = Account(subject="g-1001", email="person@gmail.com", name="A Person")
    identity = await sign_in(flows, "google")
    assert identity == ExternalIdentity(
        provider="google", subject="g-1001", email="person@gmail.com", email_verified=True, name="A Person"
    )
    sent = google.seen.authorize[-1]
    assert sent["nonce"] and sent["code_challenge_method"] == "S256" and "openid" in sent["scope"].split()


@pytest.mark.parametrize("tamper", ["bad_signature", "wrong_audience", "wrong_issuer", "wrong_nonce", "expired"])
async def test_google_refuses_a_bad_id_token(flows: OAuthFlows, google: FakeGoogle, tamper: str) -> None:
    google.account = Account(subject="g-1", email="person@gmail.com")
    google.tamper.add(tamper)
    with pytest.raises(OAuthError) as info:
        await sign_in(flows, "google")
    assert info.value.reason == "id_token", info.value


@pytest.mark.parametrize(
    ("provider", "endpoint", "what"),
    [
        ("github", "token", "token"),
        ("github", "user", "user"),
        ("github", "emails", "email addresses"),
        ("google", "discovery", "discovery document"),
        ("google", "jwks", "signing keys"),
        ("google", "token", "token"),
    ],
)
@pytest.mark.parametrize("mode", ["html", "shape"])
async def test_a_provider_answering_nonsense_with_200_is_a_502(
    flows: OAuthFlows, github: FakeGitHub, google: FakeGoogle, provider: str, endpoint: str, what: str, mode: str
) -> None:
    """Not JSON (a captive portal's page) or JSON of the wrong shape, with status 200,
    at any step: a clear refusal naming the provider and what it sent, not a crash."""
    fake = github if provider == "github" else google
    fake.account = Account(subject="31337", email="nonsense@example.com")
    fake.misbehave[endpoint] = mode
    with pytest.raises(OAuthError) as info:
        await sign_in(flows, provider)
    name = "GitHub" if provider == "github" else "Google"
    assert info.value.status == 502 and info.value.reason == "provider", info.value
    assert str(info.value).startswith(f"{name} answered something that is not "), info.value
    assert what in str(info.value)


async def test_a_replayed_code_is_refused(flows: OAuthFlows, github: FakeGitHub) -> None:
    github.account = Account(subject="5", email="five@example.com")
    flow, cookie, _ = flows.new_state("github", "/", None)
    query = await at_provider(flows, flow)
    checked = flows.read_state("github", cookie, query["state"])
    await flows.identity(checked, query)
    with pytest.raises(OAuthError) as info:
        await flows.identity(checked, query)
    assert info.value.reason == "code"


async def test_a_code_without_the_flows_verifier_is_refused(flows: OAuthFlows, google: FakeGoogle) -> None:
    """A code from one flow redeemed under another flow's state: its verifier does not
    match the challenge (PKCE), so an intercepted code is worthless."""
    google.account = Account(subject="g-2", email="two@gmail.com")
    flow, _, _ = flows.new_state("google", "/", None)
    query = await at_provider(flows, flow)
    other, _, _ = flows.new_state("google", "/", None)
    with pytest.raises(OAuthError) as info:
        await flows.identity(other, query)
    assert info.value.reason == "code"


def test_state_cookie_checks(flows: OAuthFlows) -> None:
    flow, cookie, ttl = flows.new_state("github", "/keys", "usr_1")
    assert ttl == 600
    assert flows.read_state("github", cookie, flow.state).link_user == "usr_1"
    refusals = [
        (None, flow.state, "github"),  # no cookie: another browser
        (cookie, "x" + flow.state, "github"),  # another state
        (cookie, None, "github"),
        (cookie, flow.state, "google"),  # another provider
        (cookie[:-2] + "AA", flow.state, "github"),  # not our signature
        ("garbage", flow.state, "github"),
    ]
    for value, state, provider in refusals:
        with pytest.raises(OAuthError) as info:
            flows.read_state(provider, value, state)
        assert info.value.reason == "state"


def test_expired_state_is_refused(github: FakeGitHub, google: FakeGoogle) -> None:
    now = [1000.0]
    flows = OAuthFlows({}, Digester(b"y" * 32), base_url=BASE, clock=lambda: now[0])
    flow, cookie, _ = flows.new_state("github", "/", None)
    now[0] += 601
    with pytest.raises(OAuthError, match="too long"):
        flows.read_state("github", cookie, flow.state)


async def test_denied_at_the_provider(flows: OAuthFlows, github: FakeGitHub) -> None:
    github.account = None  # the person pressed "Cancel"
    flow, cookie, _ = flows.new_state("github", "/", None)
    query = await at_provider(flows, flow)
    assert query["error"] == "access_denied"
    with pytest.raises(OAuthError) as info:
        await flows.identity(flows.read_state("github", cookie, query["state"]), query)
    assert info.value.reason == "denied"


def test_unconfigured_provider_is_404() -> None:
    flows = OAuthFlows({}, Digester(b"z" * 32), base_url=BASE)
    with pytest.raises(OAuthError) as info:
        flows.config("github")
    assert info.value.status == 404 and flows.offered == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/keys?x=1", "/keys?x=1"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("keys", "/"),
        ("/a\nb", "/"),
        ("/a\\b", "/"),
    ],
)
def test_safe_next(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected
