"""The whole operation table of ``/api/v1`` (accounts, then keys, usage and alerts),
and the router over it: one table drives both the router (``app.py``) and the
OpenAPI document (``openapi.py``)."""

from __future__ import annotations

from agentrouter.api.account_routes import ACCOUNT_OPERATIONS
from agentrouter.api.routes import KEY_OPERATIONS, Operation

__all__ = ["OPERATIONS", "match"]

OPERATIONS: tuple[Operation, ...] = (*ACCOUNT_OPERATIONS, *KEY_OPERATIONS)


def match(method: str, path: str) -> tuple[Operation | None, dict[str, str], list[str]]:
    """(operation, path params, methods allowed on the path)."""
    allowed: list[str] = []
    for op in OPERATIONS:
        m = op.regex.match(path)
        if m is None:
            continue
        if op.method == method:
            return op, m.groupdict(), []
        allowed.append(op.method)
    return None, {}, allowed
