"""Fake GitHub and Google OAuth providers on loopback, for the sign-in tests.

Each is an aiohttp server on its own loop in a daemon thread (like
``tests/upstream_fake.py``), so a synchronous test drives a real ``agentrouter serve``
through them with an HTTP client that follows redirects and keeps cookies.

Both implement the authorization code flow strictly: the authorize endpoint checks
the client id and the registered redirect URI and records the PKCE challenge (S256
only) and, for Google, the nonce; it then "signs in" whoever the test set as
``account`` and redirects back with a fresh code and the ``state``. The token
endpoint authenticates the client (GitHub: ``client_secret`` in the form; Google:
HTTP Basic), requires the same ``redirect_uri``, checks ``code_verifier`` against
the challenge, and accepts each code once (a replay is ``invalid_grant`` /
``bad_verification_code``).

* ``FakeGitHub``: ``/login/oauth/authorize``, ``/login/oauth/access_token``, and the
  API's ``/user`` and ``/user/emails`` for the access token it issued.
* ``FakeGoogle``: ``/.well-known/openid-configuration``, ``/jwks`` (its RSA public key),
  ``/o/oauth2/v2/auth``, ``/token`` issuing RS256 ID tokens signed by the key of its
  JWKS. ``tamper`` bends the next ID tokens for the refusal tests: ``bad_signature``
  (signed by another key under the same ``kid``), ``wrong_audience``, ``wrong_issuer``,
  ``wrong_nonce``, ``expired``.

Both can also misbehave: ``misbehave`` maps an endpoint (GitHub: ``token``, ``user``,
``emails``; Google: ``discovery``, ``jwks``, ``token``) to what it answers instead,
with status 200: ``html`` (an HTML page, as a captive portal or a proxy's error page
would) or ``shape`` (JSON of the wrong shape: a list for an object, an object for a
list, a JWKS whose ``keys`` is not a list).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.threaded_server import ThreadedServer

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-0123456789"


@dataclass
class Account:
    """Who signs in at the fake provider."""

    subject: str
    email: str | None
    email_verified: bool = True
    name: str | None = "Test Person"
    login: str = "octocat"


@dataclass
class Grant:
    code: str
    client_id: str
    redirect_uri: str
    challenge: str
    account: Account
    nonce: str | None = None
    used: bool = False


@dataclass
class Seen:
    """What the provider received, for assertions."""

    authorize: list[dict[str, str]] = field(default_factory=list)
    token: list[dict[str, str]] = field(default_factory=list)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class _FakeServer(ThreadedServer):
    """An aiohttp app on a loopback port in a thread of its own."""

    name = "fake"

    def __init__(self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        super().__init__()
        self.label = f"the fake {self.name}"
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris: set[str] = set()
        """The registered callback URLs (empty: any, for tests that do not care)."""
        self.account: Account | None = None
        self.grants: dict[str, Grant] = {}
        self.tokens: dict[str, Account] = {}
        self.seen = Seen()
        self.misbehave: dict[str, str] = {}
        """endpoint -> ``html`` or ``shape``: answer that instead (status 200)."""
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------

    async def _startup(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _misbehaving(self, endpoint: str, shape: Any) -> web.Response | None:
        """The wrong answer ``misbehave`` asks of ``endpoint``, or None (answer properly)."""
        mode = self.misbehave.get(endpoint)
        if mode == "html":
            return web.Response(
                status=200, text="<html><body>Please sign in to the network</body></html>", content_type="text/html"
            )
        if mode == "shape":
            return web.json_response(shape)
        return None

    # -- the shared authorization-code logic -------------------------------------

    def _authorize(self, request: web.Request, *, oidc: bool) -> web.Response:
        q = dict(request.query)
        self.seen.authorize.append(q)
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client_id")
        redirect_uri = q.get("redirect_uri", "")
        if self.redirect_uris and redirect_uri not in self.redirect_uris:
            return web.Response(status=400, text="redirect_uri is not registered")
        if q.get("response_type", "code") != "code":
            return web.Response(status=400, text="response_type must be code")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.Response(status=400, text="PKCE with S256 is required")
        if oidc and "openid" not in q.get("scope", "").split():
            return web.Response(status=400, text="scope openid is required")
        state = q.get("state", "")
        if self.account is None:
            return _redirect(redirect_uri + "?" + urlencode({"error": "access_denied", "state": state}))
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            code=code,
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            challenge=q["code_challenge"],
            account=self.account,
            nonce=q.get("nonce"),
        )
        return _redirect(redirect_uri + "?" + urlencode({"code": code, "state": state}))

    def _redeem(self, form: dict[str, str], client_id: str | None, client_secret: str | None) -> Grant | str:
        """The grant of a valid token request, or the OAuth error code."""
        self.seen.token.append(form)
        if client_id != self.client_id or client_secret != self.client_secret:
            return "invalid_client"
        if form.get("grant_type", "authorization_code") != "authorization_code":
            return "unsupported_grant_type"
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.used:
            return "invalid_grant"
        grant.used = True  # once, even when the rest of the request is wrong
        if form.get("redirect_uri") != grant.redirect_uri:
            return "invalid_grant"
        verifier = form.get("code_verifier")
        if not verifier or s256(verifier) != grant.challenge:
            return "invalid_grant"
        return grant


class FakeGitHub(_FakeServer):
    name = "github"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra_emails: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/login/oauth/authorize", self.authorize)
        app.router.add_post("/login/oauth/access_token", self.access_token)
        app.router.add_get("/api/user", self.user)
        app.router.add_get("/api/user/emails", self.emails)

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    async def authorize(self, request: web.Request) -> web.Response:
        return self._authorize(request, oidc=False)

    async def access_token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        found = self._redeem(form, form.get("client_id"), form.get("client_secret"))
        wrong = self._misbehaving("token", ["access_token", "gho_x"])
        if wrong is not None:
            return wrong
        if isinstance(found, str):
            # GitHub answers token errors with 200 and an error body.
            error = "bad_verification_code" if found == "invalid_grant" else found
            return web.json_response({"error": error, "error_description": "refused by the fake"})
        token = "gho_" + secrets.token_urlsafe(20)
        self.tokens[token] = found.account
        return web.json_response({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})

    def _account(self, request: web.Request) -> Account | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.tokens.get(token.strip())

    async def user(self, request: web.Request) -> web.Response:
        wrong = self._misbehaving("user", [{"id": 1}])
        if wrong is not None:
            return wrong
        account = self._account(request)
        if account is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response(
            {"id": int(account.subject), "login": account.login, "name": account.name, "email": None}
        )

    async def emails(self, request: web.Request) -> web.Response:
        wrong = self._misbehaving("emails", {"email": "someone@example.com", "primary": True, "verified": True})
        if wrong is not None:
            return wrong
        account = self._account(request)
        if account is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        items: list[dict[str, Any]] = []
        if account.email:
            items.append({"email": account.email, "primary": True, "verified": account.email_verified})
        return web.json_response(items + self.extra_emails)


class FakeGoogle(_FakeServer):
    name = "google"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = RSAKey.generate_key(2048, parameters={"kid": "fake-key-1", "use": "sig", "alg": "RS256"})
        self.tamper: set[str] = set()
        self.clock = time.time

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/o/oauth2/v2/auth", self.authorize)
        app.router.add_post("/token", self.token)

    @property
    def discovery_url(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    async def discovery(self, request: web.Request) -> web.Response:
        wrong = self._misbehaving("discovery", ["issuer", self.url])
        if wrong is not None:
            return wrong
        return web.json_response(
            {
                "issuer": self.url,
                "authorization_endpoint": self.url + "/o/oauth2/v2/auth",
                "token_endpoint": self.url + "/token",
                "jwks_uri": self.url + "/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        wrong = self._misbehaving("jwks", {"keys": {"kid": "fake-key-1"}})
        if wrong is not None:
            return wrong
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: web.Request) -> web.Response:
        if not request.query.get("nonce"):
            return web.Response(status=400, text="nonce is required")
        return self._authorize(request, oidc=True)

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            from urllib.parse import unquote

            user, _, password = base64.b64decode(encoded).decode().partition(":")
            client_id, client_secret = unquote(user), unquote(password)
        found = self._redeem(form, client_id, client_secret)
        wrong = self._misbehaving("token", ["access_token", "ya29.x"])
        if wrong is not None:
            return wrong
        if isinstance(found, str):
            return web.json_response({"error": found}, status=400 if found != "invalid_client" else 401)
        access = "ya29." + secrets.token_urlsafe(20)
        self.tokens[access] = found.account
        return web.json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 3599,
                "scope": "openid email profile",
                "id_token": self.id_token(found, access),
            }
        )

    def id_token(self, grant: Grant, access_token: str) -> str:
        now = int(self.clock())
        account = grant.account
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "sub": account.subject,
            "iat": now,
            "exp": now + 3600,
            "nonce": grant.nonce,
            "at_hash": _at_hash(access_token),
        }
        if account.email is not None:
            claims["email"] = account.email
            claims["email_verified"] = account.email_verified
        if account.name is not None:
            claims["name"] = account.name
        key = self.key
        if "bad_signature" in self.tamper:
            key = RSAKey.generate_key(2048, parameters={"kid": "fake-key-1"})
        if "wrong_audience" in self.tamper:
            claims["aud"] = claims["azp"] = "someone-else.apps.googleusercontent.com"
        if "wrong_issuer" in self.tamper:
            claims["iss"] = "https://evil.example"
        if "wrong_nonce" in self.tamper:
            claims["nonce"] = "not-the-nonce"
        if "expired" in self.tamper:
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        return jwt.encode({"alg": "RS256", "kid": "fake-key-1"}, claims, key)


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})
