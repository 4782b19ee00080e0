"""The console's side of HTTP: a request as its handlers see it, and the answers.

Every answer of the console carries the same security headers (``SECURITY_HEADERS``):
a strict Content-Security-Policy (only the console's own scripts, styles and images;
no inline script or style, no framing, no ``<base>``, forms only to this origin),
``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` and
``X-Content-Type-Options: nosniff``. Pages are ``Cache-Control: no-store`` (they show
a user's data, and a new key once); static files are cached for good under their
hashed URLs (``assets``).
"""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from agentrouter.asgi import Scope, Send

__all__ = ["CSP", "SECURITY_HEADERS", "FormError", "Request", "Response", "html", "redirect", "safe_next"]

CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HTML = (b"content-type", b"text/html; charset=utf-8")
NO_STORE = (b"cache-control", b"no-store")
MAX_FORM = 64 * 1024
"""The largest form body the console reads (metadata labels are at most 16 KiB)."""


class FormError(Exception):
    """A form field the console itself cannot turn into an API request body (a
    metadata text that is not JSON): shown next to that field, like the API's own."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Request:
    """One console request: its ASGI scope, query and (for a form post) fields."""

    def __init__(self, scope: Scope, params: dict[str, str], form: dict[str, list[str]] | None = None) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.params = params
        raw = scope.get("query_string", b"")
        self.query_string: str = raw.decode("utf-8", "replace") if raw else ""
        self.query: dict[str, list[str]] = {}
        for name, value in parse_qsl(self.query_string, keep_blank_values=True):
            self.query.setdefault(name, []).append(value)
        self.form: dict[str, list[str]] = form or {}
        self.cookies = _cookies(scope)
        self.api_cookies: list[bytes] = []
        """``Set-Cookie`` values of the API's answers, relayed with the console's."""

    @property
    def full_path(self) -> str:
        return self.path + ("?" + self.query_string if self.query_string else "")

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0].strip() if values else default

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value).decode("latin-1")
        return None

    def base_url(self) -> str:
        """This gateway's address as the browser reached it (for the snippets)."""
        host = self.header(b"host")
        if not host:
            server = self.scope.get("server") or ("127.0.0.1", 8080)
            host = f"{server[0]}:{server[1]}"
        return f"{self.scope.get('scheme', 'http')}://{host}"


def _cookies(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(bytes(value).decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is ignored, as browsers do
                continue
            for name, morsel in jar.items():
                out.setdefault(name, morsel.value)
    return out


def parse_form(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = body.decode("utf-8", "replace")
    for name, value in parse_qsl(text, keep_blank_values=True):
        out.setdefault(name, []).append(value)
    return out


class Response:
    """An answer: status, headers, body. ``cookies`` are ``Set-Cookie`` values relayed
    from the management API (a sign-in's session cookie) or set by the console."""

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        headers: Iterable[tuple[bytes, bytes]] = (),
        cookies: Iterable[bytes] = (),
    ) -> None:
        self.body = body
        self.status = status
        self.headers = list(headers)
        self.cookies = list(cookies)

    async def send(self, send: Send, *, head: bool = False) -> None:
        own = {name for name, _ in self.headers}
        headers = [h for h in SECURITY_HEADERS if h[0] not in own] + self.headers
        headers += [(b"set-cookie", c) for c in self.cookies]
        headers.append((b"content-length", b"%d" % len(self.body)))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else self.body, "more_body": False})


NO_REFERRER = (b"referrer-policy", b"no-referrer")
"""For the answer to a link whose URL holds a token (verification, reset, invitation,
setup): the token must not leave in a ``Referer``."""


def html(text: str, status: int = 200, cookies: Iterable[bytes] = ()) -> Response:
    return Response(text.encode("utf-8"), status, [HTML, NO_STORE], cookies)


def redirect(location: str, cookies: Iterable[bytes] = (), status: int = 303) -> Response:
    """A redirect after a form post (303: the browser follows with GET)."""
    return Response(b"", status, [(b"location", location.encode("latin-1")), NO_STORE], cookies)


def safe_next(value: str | None, default: str = "/keys") -> str:
    """A path on this site to go back to after signing in: only a local path (``/…``,
    never ``//host`` or ``/\\host``, which browsers read as another site)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x21 or c == "\\" for c in value):
        return default
    return value


def signin_url(next_path: str) -> str:
    return "/sign-in?" + urlencode({"next": next_path}, quote_via=quote, safe="/")


def query_with(req: Request, **changes: Any) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    pairs = [(k, v) for k, values in req.query.items() if k not in changes for v in values]
    for name, value in changes.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            pairs += [(name, str(v)) for v in value]
        else:
            pairs.append((name, str(value)))
    return urlencode(pairs)
