"""The root of AgentRouter's own exceptions.

Every error the project raises on purpose derives from ``AgentRouterError``, so each
edge (the ``/v1`` app, the management API, the console, the CLI) maps the whole
family to a response or a message in one place, and anything else is a bug.
"""

from __future__ import annotations

__all__ = ["AgentRouterError"]


class AgentRouterError(Exception):
    """Base class of the project's own errors; the message is meant for people."""
