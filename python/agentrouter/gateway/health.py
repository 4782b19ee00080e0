"""Operator endpoints beside ``/v1``, without a key and not counted as usage.

* ``GET /healthz``: the process is alive and serving: ``200 {"status": "ok"}``.
* ``GET /readyz``: ``200 {"status": "ready"}`` when this worker can serve keys — its
  key table was loaded, its store answers a trivial query, and the database file and
  the limiter region it opened are still the files at their paths (``Core.problems``);
  otherwise ``503 {"status": "unavailable", "reason": …}``, the reason naming the part
  (details go to the log, not to an unauthenticated caller). Also 503 while starting
  or shutting down, so a load balancer stops sending before the drain.

Both answer ``HEAD`` like ``GET`` without the body, and refuse other methods with 405.
The gateway serves them before its fallback app (``Gateway._operator_routes``, beside
``/metrics``: ``gateway.metrics``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from agentrouter.asgi import Scope, Send

__all__ = ["ALIVE", "READY", "answer", "readiness"]

ALIVE = {"status": "ok"}
READY = {"status": "ready"}
_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_encode = msgspec.json.Encoder().encode


async def readiness(core: Any, draining: bool) -> str | None:
    """None when ready, else why not."""
    if draining:
        return "shutting down"
    if core is None:
        return "starting"
    problems: list[str] = await core.problems()
    return "; ".join(problems) if problems else None


async def answer(scope: Scope, send: Send, status: int, document: dict[str, Any]) -> None:
    method = scope["method"]
    if method not in ("GET", "HEAD"):
        status, document = 405, {"status": "error", "reason": f"method {method} not allowed; use GET"}
    body = _encode(document)
    headers = [*_HEADERS, (b"content-length", b"%d" % len(body))]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body, "more_body": False})
