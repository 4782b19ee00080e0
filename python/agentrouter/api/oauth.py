"""GitHub and Google sign-in: the authorization code flow with ``state`` and PKCE
(S256), and for Google OpenID Connect with a ``nonce`` and a validated ID token.

The protocol work is Authlib's: ``AsyncOAuth2Client`` builds the authorization URL
(with the S256 code challenge) and exchanges the code (with the verifier);
``joserfc.jwt.decode`` checks the ID token's signature against the provider's JWKS
and Authlib's ``CodeIDToken`` its claims (issuer, audience, expiry, issued-at,
nonce, ``azp``, ``at_hash``). Nothing here parses or verifies a token by hand.

**State bound to the browser.** ``start`` makes a random ``state`` (256 bits) and
puts it, with the provider, the page to return to (``next``), the signed-in user
(when linking) and an expiry of ten minutes, in a short-lived cookie signed with
the server secret (HMAC-SHA256). The PKCE verifier and the OIDC nonce are derived
from the state under the secret (``HMAC(secret, "pkce:" + state)``), so they need
no storage and never appear in the cookie. ``finish`` refuses a callback whose
``state`` is not the cookie's (a forged or cross-browser callback: login CSRF), a
cookie that is missing, expired, for another provider or not signed by us, and the
cookie is cleared on every callback, so a callback cannot be replayed by the same
browser either; the provider itself refuses a code used twice.

**Identities.** An identity is the provider's stable id (GitHub's numeric ``id``,
Google's ``sub``), with the email the provider vouches for: GitHub's primary
email when ``verified`` (from ``/user/emails``), Google's ``email`` when
``email_verified``. What to do with it (sign in, link, refuse) is the accounts
service's decision.

Endpoints are configurable (``[oauth.github]`` ``authorize_url``,
``access_token_url``, ``api_base_url``; ``[oauth.google]`` ``server_metadata_url``), so
the tests run fake providers on loopback.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from agentrouter._core import Digester
from agentrouter.errors import AgentRouterError

__all__ = [
    "STATE_COOKIE",
    "STATE_TTL",
    "ExternalIdentity",
    "OAuthError",
    "OAuthFlows",
    "ProviderConfig",
    "safe_next",
]

log = logging.getLogger("agentrouter.oauth")

STATE_COOKIE: Final = "agentrouter_oauth"
STATE_TTL: Final = 600.0
"""Seconds between the start of a sign-in at the provider and its callback."""
HTTP_TIMEOUT: Final = 15.0
METADATA_TTL: Final = 3600.0
"""Seconds the Google discovery document and JWKS are kept before being fetched again
(an unknown ``kid`` fetches the JWKS at once: keys rotate)."""
ID_TOKEN_LEEWAY: Final = 60
"""Seconds of clock skew allowed on the ID token's ``exp`` and ``iat``."""

GITHUB_DEFAULTS: Final = {
    "authorize_url": "https://github.com/login/oauth/authorize",
    "access_token_url": "https://github.com/login/oauth/access_token",
    "api_base_url": "https://api.github.com/",
}
GOOGLE_DISCOVERY: Final = "https://accounts.google.com/.well-known/openid-configuration"

ProviderName = Literal["github", "google"]
PROVIDERS: Final[tuple[ProviderName, ...]] = ("github", "google")


class OAuthError(AgentRouterError):
    """A sign-in at a provider that cannot go on. ``reason`` is a short code for
    tests and logs (``state``, ``code``, ``id_token``, ``provider``, ``denied``…),
    ``status`` the HTTP status, the message is for people."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ProviderConfig:
    """One configured provider (from ``Settings.oauth``); endpoints None: the real ones."""

    name: ProviderName
    client_id: str
    client_secret: str
    authorize_url: str | None = None
    access_token_url: str | None = None
    api_base_url: str | None = None
    server_metadata_url: str | None = None


@dataclass(frozen=True)
class ExternalIdentity:
    """Who the provider says signed in."""

    provider: ProviderName
    subject: str
    """The provider's stable id of the account (GitHub ``id``, Google ``sub``)."""
    email: str | None
    email_verified: bool
    """Whether the provider vouches for ``email`` (verified at the provider)."""
    name: str | None
    login: str | None = None
    """GitHub's login, for display; Google has none."""


@dataclass(frozen=True)
class FlowState:
    """What the state cookie carried, once checked."""

    provider: ProviderName
    state: str
    next: str
    link_user: str | None
    """The user who started a link from their settings (None: a sign-in)."""


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` when it is a path on this site (``/keys?x=1``), else ``default``: no
    scheme, no host, no ``//`` or ``/\\`` (which browsers read as another host), no
    control characters. An open redirect after sign-in is a phishing tool."""
    if not value or len(value) > 2000:
        return default
    if not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in value):
        return default
    return value


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """One TLS context per process for the provider calls (building one costs ~40 ms)."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


class OAuthFlows:
    """The configured providers and the flow's state handling for one process."""

    def __init__(
        self,
        providers: Mapping[str, ProviderConfig],
        digester: Digester,
        *,
        base_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.providers = dict(providers)
        self._digester = digester
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._google_metadata: tuple[float, dict[str, Any]] | None = None
        self._google_jwks: tuple[float, dict[str, Any]] | None = None

    @property
    def offered(self) -> tuple[str, ...]:
        return tuple(p for p in PROVIDERS if p in self.providers)

    def callback_url(self, provider: str) -> str:
        """The redirect URI to register at the provider."""
        return f"{self._base_url}/api/v1/auth/oauth/{provider}/callback"

    def config(self, provider: str) -> ProviderConfig:
        found = self.providers.get(provider)
        if found is None:
            offered = ", ".join(self.offered) or "none"
            raise OAuthError(
                "provider", f"Sign-in with {provider!r} is not configured on this server (offered: {offered}).", 404
            )
        return found

    # -- the state cookie --------------------------------------------------------

    def _sign(self, payload: str) -> str:
        return _b64(self._digester.digest("oauth-state:" + payload))

    def _derived(self, purpose: str, state: str) -> str:
        return _b64(self._digester.digest(f"oauth-{purpose}:{state}"))

    def new_state(self, provider: ProviderName, next_page: str, link_user: str | None) -> tuple[FlowState, str, float]:
        """(the flow's state, the cookie value, its max-age)."""
        state = secrets.token_urlsafe(32)
        flow = FlowState(provider=provider, state=state, next=next_page, link_user=link_user)
        body = {"p": provider, "s": state, "n": next_page, "u": link_user, "x": self._clock() + STATE_TTL}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return flow, f"{payload}.{self._sign(payload)}", STATE_TTL

    def read_state(self, provider: str, cookie: str | None, state: str | None) -> FlowState:
        """The flow the callback belongs to; OAuthError ``state`` when the cookie is
        missing, not ours, expired, for another provider, or its state differs."""
        if not cookie:
            raise OAuthError(
                "state",
                "This sign-in was not started in this browser (or took longer than "
                f"{int(STATE_TTL // 60)} minutes); start it again.",
            )
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise OAuthError("state", "The sign-in state cookie is not valid; start the sign-in again.")
        try:
            body = json.loads(_unb64(payload))
        except ValueError:
            raise OAuthError("state", "The sign-in state cookie is not valid; start the sign-in again.") from None
        if body.get("p") != provider:
            raise OAuthError("state", "This callback belongs to a sign-in with another provider; start again.")
        if not isinstance(body.get("x"), int | float) or body["x"] < self._clock():
            raise OAuthError("state", "This sign-in took too long; start it again.")
        if not state or not hmac.compare_digest(str(body.get("s")).encode(), state.encode()):
            raise OAuthError("state", "The sign-in's state does not match this browser's; start it again.")
        return FlowState(
            provider=body["p"], state=body["s"], next=safe_next(body.get("n")), link_user=body.get("u") or None
        )

    # -- the flow ---------------------------------------------------------------

    def _client(self, config: ProviderConfig, scope: str, auth_method: str) -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]

        return AsyncOAuth2Client(
            client_id=config.client_id,
            client_secret=config.client_secret,
            scope=scope,
            redirect_uri=self.callback_url(config.name),
            code_challenge_method="S256",
            token_endpoint_auth_method=auth_method,
            timeout=HTTP_TIMEOUT,
            verify=_tls(),
            trust_env=False,
        )

    async def authorization_url(self, flow: FlowState) -> str:
        """Where to send the browser to sign in at the provider."""
        config = self.config(flow.provider)
        verifier = self._derived("pkce", flow.state)
        if config.name == "github":
            url = config.authorize_url or GITHUB_DEFAULTS["authorize_url"]
            async with self._client(config, "read:user user:email", "client_secret_post") as client:
                uri, _ = client.create_authorization_url(url, state=flow.state, code_verifier=verifier)
            return str(uri)
        metadata = await self._google_discovery(config)
        async with self._client(config, "openid email profile", "client_secret_basic") as client:
            uri, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=flow.state,
                code_verifier=verifier,
                nonce=self._derived("nonce", flow.state),
            )
        return str(uri)

    async def identity(self, flow: FlowState, query: Mapping[str, str]) -> ExternalIdentity:
        """Exchange the callback's code and say who signed in (OAuthError when not)."""
        config = self.config(flow.provider)
        if query.get("error"):
            if query["error"] == "access_denied":
                raise OAuthError("denied", f"Sign-in at {config.name} was cancelled.")
            raise OAuthError("provider", f"{config.name} refused the sign-in: {query['error'][:100]}")
        code = query.get("code")
        if not code:
            raise OAuthError("code", "The callback carries no authorization code; start the sign-in again.")
        verifier = self._derived("pkce", flow.state)
        if config.name == "github":
            return await self._github(config, code, verifier)
        return await self._google(config, code, verifier, self._derived("nonce", flow.state))

    async def _exchange(self, client: Any, url: str, code: str, verifier: str, provider: str) -> dict[str, Any]:
        from authlib.integrations.base_client.errors import OAuthError as AuthlibError  # type: ignore[import-untyped]

        label = _LABELS.get(provider, provider)

        def answer_is_an_object(resp: Any) -> Any:
            # Before Authlib reads the token response: whatever the status, it must be a
            # JSON object (a token, or an OAuth error), not a captive portal's page.
            _json(resp, label, "the token", dict)
            return resp

        client.register_compliance_hook("access_token_response", answer_is_an_object)
        try:
            token: dict[str, Any] = await client.fetch_token(
                url,
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                headers={"Accept": "application/json"},
            )
        except AuthlibError as exc:
            log.info("%s refused the code exchange: %s", provider, exc.error)
            message = f"{provider} refused the authorization code ({exc.error}); sign in again."
            raise OAuthError("code", message) from None
        except OAuthError:
            raise
        except Exception as exc:  # noqa: BLE001 - the provider unreachable or answering nonsense
            log.warning("%s token exchange failed: %s", provider, type(exc).__name__)
            raise _unreachable(provider) from None
        if not token.get("access_token"):
            raise OAuthError("code", f"{provider} gave no access token; sign in again.")
        return token

    async def _github(self, config: ProviderConfig, code: str, verifier: str) -> ExternalIdentity:
        token_url = config.access_token_url or GITHUB_DEFAULTS["access_token_url"]
        api = (config.api_base_url or GITHUB_DEFAULTS["api_base_url"]).rstrip("/")
        async with self._client(config, "read:user user:email", "client_secret_post") as client:
            await self._exchange(client, token_url, code, verifier, "github")
            headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
            try:
                user_resp = await client.get(api + "/user", headers=headers)
                emails_resp = await client.get(api + "/user/emails", headers=headers)
            except Exception as exc:  # noqa: BLE001
                log.warning("github API failed: %s", type(exc).__name__)
                raise _unreachable("GitHub") from None
        if user_resp.status_code != 200:
            raise OAuthError("provider", f"GitHub answered {user_resp.status_code} for the user; try again.", 502)
        user = _json(user_resp, "GitHub", "the user", dict)
        if not isinstance(user.get("id"), int):
            raise OAuthError("provider", "GitHub's answer for the user has no id.", 502)
        email: str | None = None
        verified = False
        if emails_resp.status_code == 200:  # another status: no email scope granted
            emails = _json(emails_resp, "GitHub", "the email addresses", list)
            if not all(isinstance(item, dict) for item in emails):
                raise OAuthError(
                    "provider", "GitHub answered something that is not a list of email addresses (objects).", 502
                )
            for item in emails:
                if item.get("primary") and isinstance(item.get("email"), str):
                    email, verified = item["email"], item.get("verified") is True
                    break
        if email is None and isinstance(user.get("email"), str):
            email = user["email"]  # the public profile email: not known to be verified
        return ExternalIdentity(
            provider="github",
            subject=str(user["id"]),
            email=email,
            email_verified=verified,
            name=user.get("name") if isinstance(user.get("name"), str) else None,
            login=user.get("login") if isinstance(user.get("login"), str) else None,
        )

    async def _fetch_json(self, url: str, what: str) -> dict[str, Any]:
        import httpx2

        try:
            async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT, verify=_tls(), trust_env=False) as client:
                resp = await client.get(url)
            resp.raise_for_status()
        except Exception as exc:  # noqa: BLE001
            log.warning("google %s failed: %s", what, type(exc).__name__)
            raise OAuthError("provider", f"Google's {what} could not be fetched; try again.", 502) from None
        data: dict[str, Any] = _json(resp, "Google", f"the {what}", dict)
        return data

    async def _google_discovery(self, config: ProviderConfig) -> dict[str, Any]:
        now = self._clock()
        cached = self._google_metadata
        if cached is not None and cached[0] > now:
            return cached[1]
        metadata = await self._fetch_json(config.server_metadata_url or GOOGLE_DISCOVERY, "discovery document")
        for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(name), str):
                raise OAuthError("provider", f"Google's discovery document has no {name}.", 502)
        self._google_metadata = (now + METADATA_TTL, metadata)
        return metadata

    async def _google_keys(self, metadata: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        now = self._clock()
        cached = self._google_jwks
        if cached is not None and cached[0] > now and not force:
            return cached[1]
        jwks = await self._fetch_json(metadata["jwks_uri"], "signing keys (JWKS)")
        keys = jwks.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise OAuthError(
                "provider", "Google answered something that is not a key set for the signing keys (JWKS).", 502
            )
        self._google_jwks = (now + METADATA_TTL, jwks)
        return jwks

    async def _google(self, config: ProviderConfig, code: str, verifier: str, nonce: str) -> ExternalIdentity:
        metadata = await self._google_discovery(config)
        async with self._client(config, "openid email profile", "client_secret_basic") as client:
            token = await self._exchange(client, metadata["token_endpoint"], code, verifier, "google")
        raw = token.get("id_token")
        if not isinstance(raw, str):
            raise OAuthError("id_token", "Google gave no ID token; sign in again.")
        claims = await self._validate_id_token(config, metadata, raw, nonce, str(token["access_token"]))
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        return ExternalIdentity(
            provider="google",
            subject=str(claims["sub"]),
            email=email,
            email_verified=claims.get("email_verified") is True,
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
        )

    async def _validate_id_token(
        self, config: ProviderConfig, metadata: dict[str, Any], raw: str, nonce: str, access_token: str
    ) -> dict[str, Any]:
        """The ID token's claims after joserfc checked its signature against the JWKS
        and Authlib's ``CodeIDToken`` its claims (iss, aud, exp, iat, nonce, azp,
        at_hash) — as Authlib's own OpenID client does, with the audience required."""
        from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
        from joserfc import jwt
        from joserfc.errors import InvalidKeyIdError, JoseError
        from joserfc.jwk import KeySet
        from joserfc.jws import JWSRegistry

        algorithms = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in algorithms if isinstance(a, str) and a != "none"] or ["RS256"]
        registry = JWSRegistry(algorithms=algorithms, strict_check_header=False)
        try:
            try:
                keys = await self._google_keys(metadata)
                decoded = jwt.decode(raw, KeySet.import_key_set(keys), registry=registry)  # type: ignore[arg-type]
            except InvalidKeyIdError:  # a key we have not seen yet: Google rotated its keys
                keys = await self._google_keys(metadata, force=True)
                decoded = jwt.decode(raw, KeySet.import_key_set(keys), registry=registry)  # type: ignore[arg-type]
            options: dict[str, Any] = {
                "iss": {"essential": True, "values": [metadata["issuer"]]},
                "aud": {"essential": True, "values": [config.client_id]},
            }
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                options,
                {"nonce": nonce, "client_id": config.client_id, "access_token": access_token},
            )
            claims.validate(now=int(self._clock()), leeway=ID_TOKEN_LEEWAY)
        except (JoseError, ValueError) as exc:
            what = getattr(exc, "error", type(exc).__name__)
            log.info("google ID token refused: %s %s", what, getattr(exc, "description", "") or "")
            raise OAuthError("id_token", f"Google's ID token was refused ({what}); sign in again.") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise OAuthError("id_token", "Google's ID token names no subject.")
        return dict(claims)


_LABELS: Final = {"github": "GitHub", "google": "Google"}
_KINDS: Final[dict[type[Any], str]] = {dict: "a JSON object", list: "a JSON list"}


def _json(resp: Any, provider: str, what: str, kind: type[Any]) -> Any:
    """The JSON body of the provider's answer for ``what``, when it is of ``kind``
    (``dict`` or ``list``); else OAuthError ``provider`` (502): a captive portal's
    page, a proxy's error or an API that changed must not crash the callback."""
    try:
        data = resp.json()
    except ValueError:  # not JSON at all (json.JSONDecodeError, UnicodeDecodeError)
        data = _NOT_JSON
    if not isinstance(data, kind):
        log.warning("%s answered %s for %s (HTTP %s)", provider, type(data).__name__, what, resp.status_code)
        status = resp.status_code
        message = f"{provider} answered something that is not {_KINDS[kind]} for {what} (HTTP {status}); try again."
        raise OAuthError("provider", message, 502)
    return data


_NOT_JSON: Final = object()


def _unreachable(provider: str) -> OAuthError:
    return OAuthError("provider", f"{provider} could not be reached to finish the sign-in; try again.", 502)


def flows_from_settings(settings: Any, digester: Digester, *, clock: Callable[[], float] = time.time) -> OAuthFlows:
    """The providers ``settings.oauth`` offers (a client id set), on ``settings.base_url``."""
    providers: dict[str, ProviderConfig] = {}
    oauth = getattr(settings, "oauth", None)
    for name in PROVIDERS:
        found = oauth.provider(name) if oauth is not None else None
        if found is None:
            continue
        providers[name] = ProviderConfig(
            name=name,
            client_id=found.client_id,
            client_secret=found.client_secret or "",
            authorize_url=found.authorize_url,
            access_token_url=found.access_token_url,
            api_base_url=found.api_base_url,
            server_metadata_url=found.server_metadata_url,
        )
    return OAuthFlows(providers, digester, base_url=getattr(settings, "base_url", "http://127.0.0.1:8080"), clock=clock)
