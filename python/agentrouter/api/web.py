"""The browser's side of ``/api/v1``: the session cookie, its CSRF token and the
same-origin check.

**The cookie.** ``agentrouter_session`` (``__Host-agentrouter_session`` with ``Secure``
when the public URL is https: the prefix makes browsers refuse it unless it is
Secure, host-only and ``Path=/``, so a sibling subdomain cannot plant or shadow it),
``HttpOnly`` (no script reads it, so an injected script cannot carry it away),
``SameSite=Lax`` (not sent on cross-site subrequests and form posts; sent on a
top-level navigation, which the OAuth callback needs), ``Path=/``, and ``Max-Age``
the session's remaining life. The value is the session's opaque token; the store
holds only its digest.

**CSRF.** A request authenticated by the cookie that can change state (anything
but GET, HEAD, OPTIONS) must carry both:

* ``X-CSRF-Token`` equal to the session's CSRF token, compared in constant time.
  The token is derived from the session token under the server secret
  (``HMAC(secret, "csrf:" + token)``), so it is bound to that session, needs no
  storage, changes with every sign-in and is worthless without the cookie. It is
  returned by sign-in and by ``GET /api/v1/auth/session``; a cross-site page cannot
  read either answer (no CORS for it), nor set a custom header on a form post.
* an ``Origin`` of this site (``Referer`` when a browser sends no ``Origin``), matched
  against the public URL's origin and the request's own ``Host``: the second,
  independent line, which also holds when a token leaked.

A manage key in ``Authorization`` or ``x-api-key`` needs neither: browsers never attach
those on their own, so a cross-site request cannot carry one.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from agentrouter._core import Digester

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "HOST_COOKIE_NAME",
    "SAFE_METHODS",
    "CookiePolicy",
    "csrf_matches",
    "csrf_token",
    "origin_of",
    "read_cookies",
    "request_origins",
    "same_origin_refusal",
]

COOKIE_NAME = "agentrouter_session"
HOST_COOKIE_NAME = "__Host-agentrouter_session"
CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN = 256
"""Longest cookie value taken as a session token (ours are 43 characters)."""


class CookiePolicy:
    """How this server names and flags its cookies (from the public URL's scheme)."""

    def __init__(self, *, https: bool) -> None:
        self.https = https
        self.session_name = HOST_COOKIE_NAME if https else COOKIE_NAME

    def _flags(self, max_age: int, same_site: str = "Lax") -> str:
        secure = "; Secure" if self.https else ""
        return f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite={same_site}{secure}"

    def set_session(self, token: str, max_age: float) -> tuple[bytes, bytes]:
        """``Set-Cookie`` for a new session token living ``max_age`` seconds."""
        return (b"set-cookie", f"{self.session_name}={token}{self._flags(max(0, int(max_age)))}".encode())

    def clear_session(self) -> tuple[bytes, bytes]:
        """``Set-Cookie`` that removes the session cookie (sign-out, an ended session)."""
        return (b"set-cookie", f"{self.session_name}={self._flags(0)}".encode())

    def set_named(self, name: str, value: str, max_age: float, *, same_site: str = "Lax") -> tuple[bytes, bytes]:
        """A short-lived cookie of ours beside the session (the OAuth state). With https
        it takes the ``__Host-`` prefix too."""
        full = ("__Host-" + name) if self.https else name
        return (b"set-cookie", f"{full}={value}{self._flags(max(0, int(max_age)), same_site)}".encode())

    def clear_named(self, name: str) -> tuple[bytes, bytes]:
        return self.set_named(name, "", 0)

    def named(self, cookies: dict[str, str], name: str) -> str | None:
        return cookies.get(("__Host-" + name) if self.https else name)

    def session_token(self, cookies: dict[str, str]) -> str | None:
        token = cookies.get(self.session_name)
        if not token or len(token) > MAX_TOKEN:
            return None
        return token


def read_cookies(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's cookies (every ``Cookie`` header; the first of a repeated name
    wins, as browsers send the most specific first). Undecodable ones are skipped."""
    out: dict[str, str] = {}
    for name, value in headers:
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key and key not in out:
                out[key] = val.strip().strip('"')
    return out


def csrf_token(digester: Digester, session_token: str) -> str:
    """The CSRF token of a session: ``HMAC(secret, "csrf:" + token)``, base64url."""
    raw = digester.digest("csrf:" + session_token)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def csrf_matches(digester: Digester, session_token: str, given: bytes | None) -> bool:
    """Whether ``given`` (the ``X-CSRF-Token`` header) is this session's token, in
    constant time."""
    if not given:
        return False
    expected = csrf_token(digester, session_token).encode()
    return hmac.compare_digest(expected, given.strip())


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lowercased, default ports dropped; None when
    it is not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def request_origins(scope_scheme: str, host: bytes | None, public_origin: str | None) -> set[str]:
    """The origins a same-site request may come from: the public URL's, and the one
    the request was addressed to (its scheme and ``Host``)."""
    allowed = set()
    if public_origin:
        allowed.add(public_origin)
    if host:
        own = origin_of(f"{scope_scheme}://{host.decode('latin-1')}")
        if own is not None:
            allowed.add(own)
    return allowed


def same_origin_refusal(origin: bytes | None, referer: bytes | None, allowed: set[str]) -> str | None:
    """Why a cookie-authenticated state change is refused for where it came from, or
    None when ``Origin`` (else ``Referer``) is one of ``allowed``. A request with
    neither header is refused: every browser in use sends ``Origin`` on a POST, PUT,
    PATCH or DELETE, so its absence means a client that should use a manage key."""
    if origin is not None:
        text = origin.decode("latin-1").strip()
        if text == "null":
            return "Cross-origin request refused: the Origin header is 'null' (a sandboxed or file page)."
        if origin_of(text) in allowed:
            return None
        return f"Cross-origin request refused: Origin {text[:100]!r} is not this site."
    if referer is not None:
        text = referer.decode("latin-1").strip()
        if origin_of(text) in allowed:
            return None
        return "Cross-origin request refused: the Referer is not a page of this site."
    return (
        "A request signed in with a session cookie that changes something needs an Origin header of this "
        "site (browsers send it); scripts should use a manage key instead."
    )
