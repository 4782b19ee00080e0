"""The whole operation table of ``/api/v1`` (accounts, then keys, usage and alerts),
and the router over it: one table drives both the router (``app.py``) and the
OpenAPI document (``openapi.py``)."""

from __future__ import annotations

from agentrouter.api.account_routes import ACCOUNT_OPERATIONS
from agentrouter.api.routes import KEY_OPERATIONS, Operation

__all__ = ["OPERATIONS", "match"]

OPERATIONS: tuple[Operation, ...] = (*ACCOUNT_OPERATIONS, *KEY_OPERATIONS)


def match(method: str, path: str) -> tuple[Operation | None, dict[str, str], list[str]]:
    """(operation, path params, methods allowed on the path). A path that a literal
    template names (``/api/v1/me/sessions/end-all``) belongs to that template only,
    never to a parameterised one that would also match (``…/sessions/{session_id}``)."""
    found: list[tuple[int, Operation, dict[str, str]]] = []
    for op in OPERATIONS:
        m = op.regex.match(path)
        if m is not None:
            params = m.groupdict()
            found.append((len(params), op, params))
    if not found:
        return None, {}, []
    fewest = min(n for n, _, _ in found)
    allowed: list[str] = []
    for n, op, params in found:
        if n != fewest:
            continue
        if op.method == method:
            return op, params, []
        allowed.append(op.method)
    return None, {}, allowed
