"""The ``GET /metrics`` answer (``HEAD`` like it, without the body; other methods 405).

With ``metrics_require_key`` (the default) it needs a management key, checked by the
process's one key authenticator exactly as ``/api`` checks it: the same header
rules, refusals, error body (``{"error": {"type", "message", "field"}}``) and
``WWW-Authenticate`` / rate-limit headers. It is never counted as usage, and costs
one read of each other worker's snapshot file (a few kilobytes) and one rendering.
With ``metrics_enabled = false`` it is a 404 in the OpenAI dialect, like any path
the gateway does not serve (answered by the gateway, not the mounted API).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from agentrouter.api.errors import ApiError
from agentrouter.asgi import Scope, Send
from agentrouter.auth import MANAGE_SCOPE, KeyAuthenticator, key_headers, rate_limit_headers
from agentrouter.gateway.metrics.render import exposition
from agentrouter.gateway.metrics.snapshot import Merged, Snapshot, merge, read_peers

__all__ = ["Endpoint"]

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_WWW_AUTH = (b"www-authenticate", b'Bearer realm="agentrouter-api"')
_encode = msgspec.json.Encoder().encode


class Endpoint:
    def __init__(self, take: Callable[[], Snapshot], directory: Path, *, require_key: bool) -> None:
        self._take = take
        self.directory = directory
        self.require_key = require_key

    def merged(self) -> Merged:
        """This worker's live counters plus the other live workers' latest snapshots."""
        return merge([self._take(), *read_peers(self.directory, os.getpid(), os.getppid())])

    async def answer(self, scope: Scope, send: Send, auth: KeyAuthenticator | None) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _error(
                send, ApiError(405, f"Method {method} is not allowed on /metrics; use GET."), [(b"allow", b"GET, HEAD")]
            )
            return
        limit_headers: list[tuple[bytes, bytes]] = []
        if self.require_key:
            if auth is None:
                await _error(send, ApiError(503, "The gateway is starting; try again in a moment."))
                return
            authorization, x_api_key, repeated = key_headers(scope["headers"])
            result = await auth.authenticate(authorization, x_api_key, MANAGE_SCOPE, repeated)
            limit_headers = rate_limit_headers(result.decision)
            if result.refusal is not None:
                extra = [_WWW_AUTH] if result.refusal.status == 401 else []
                await _error(send, ApiError(result.refusal.status, result.message), extra + limit_headers)
                return
        accept = next((v for n, v in scope["headers"] if n == b"accept"), b"").decode("latin-1")
        body, content_type = exposition(self.merged(), accept)
        headers = [
            (b"content-type", content_type.encode()),
            _NO_STORE,
            *limit_headers,
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False})


async def _error(send: Send, exc: ApiError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = _encode(exc.body())
    headers = [_JSON, _NO_STORE, *(extra or []), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
