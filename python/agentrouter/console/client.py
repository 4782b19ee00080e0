"""The console's client of the management API: ``/api/v1`` called in-process.

The console is a client of ``/api/v1`` like any script, not a second backend. A page
or a form post of the console becomes the API request it stands for, passed to the
management API app in the same worker as an ASGI call: the browser's own headers
(its session cookie, ``Origin``, ``User-Agent``; a ``Bearer`` key if it sent one) and
its client address go with it unchanged, and a form's CSRF token field goes as the
``X-CSRF-Token`` header. So every check of the API applies exactly as for a script —
authentication, CSRF and same-origin ``Origin``, object-level authorization (404 for
another user's key), validation with the field at fault, throttling with
``Retry-After`` — and the console only turns forms into JSON bodies and JSON answers
into pages. ``Set-Cookie`` headers of the API's answers (a sign-in's session cookie,
a sign-out's clearing) are relayed to the browser.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlencode

import msgspec

from agentrouter.asgi import ASGIApp
from agentrouter.console.http import Request

__all__ = ["ApiClient", "ApiReply"]

# Browser headers not passed on: the framing and encoding of the console's own
# request (the API request has its own body), and a CSRF header (the API call's
# comes from the form's field, never from a header sent to a console route).
_DROP = frozenset(
    {
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"accept",
        b"accept-encoding",
        b"x-csrf-token",
        b"expect",
        b"connection",
        b"upgrade",
    }
)
_encode = msgspec.json.Encoder().encode

Query = Mapping[str, str | Sequence[str] | None] | Sequence[tuple[str, str]] | None


class ApiReply:
    """An answer of the API: status, headers and the decoded JSON body."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data: Any = None
        if body:
            try:
                self.data = msgspec.json.decode(body)
            except msgspec.DecodeError:
                self.data = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of a failed answer (``type``, ``message``, ``field``)."""
        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            return dict(self.data["error"])
        return {"type": "api_error", "message": f"The management API answered {self.status}.", "field": None}

    @property
    def message(self) -> str:
        """The API's message; for a refused cross-site or stale form post, what to do."""
        message = str(self.error.get("message") or "")
        if self.status == 403 and self.error.get("code") == "csrf_failed":
            return f"This form was sent from another site or an old page; reload the page and try again. ({message})"
        return message

    @property
    def field(self) -> str | None:
        field = self.error.get("field")
        return str(field) if field else None

    @property
    def code(self) -> str | None:
        """The error's stable reason (``invalid_credentials``, ``csrf_failed``…), if any."""
        code = self.error.get("code")
        return str(code) if code else None

    @property
    def retry_after(self) -> int | None:
        value = self.header(b"retry-after")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


class ApiClient:
    """Calls the management API app in-process on behalf of a console request."""

    def __init__(self, api: ASGIApp) -> None:
        self._api = api

    async def call(
        self,
        req: Request,
        method: str,
        path: str,
        *,
        query: Query = None,
        body: Any = msgspec.UNSET,
        csrf: str | None = None,
    ) -> ApiReply:
        headers = [(k, v) for k, v in req.scope["headers"] if k not in _DROP]
        headers.append((b"accept", b"application/json"))
        data = b""
        if body is not msgspec.UNSET:
            data = _encode(body)
            headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", b"%d" % len(data)))
        if csrf is not None:
            headers.append((b"x-csrf-token", csrf.encode("latin-1", "replace")))
        scope = dict(req.scope)
        scope.update(
            method=method,
            path=path,
            raw_path=path.encode(),
            query_string=_query(query).encode(),
            root_path="",
            headers=headers,
        )
        sent = False
        start: MutableMapping[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self._api(scope, receive, send)
        reply = ApiReply(int(start.get("status", 500)), list(start.get("headers", [])), b"".join(chunks))
        req.api_cookies += [v for k, v in reply.headers if k == b"set-cookie"]
        return reply


def _query(query: Query) -> str:
    if not query:
        return ""
    if isinstance(query, Mapping):
        pairs: list[tuple[str, str]] = []
        for name, value in query.items():
            if value is None:
                continue
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                pairs += [(name, v) for v in value]
        return urlencode(pairs)
    return urlencode(list(query))
