"""What the gateway mounts outside ``/v1``: the management API under ``/api`` and
the console everywhere else.

The gateway passes this app every request that is not its own (``/v1``, ``/healthz``,
``/readyz``); ``Site`` sends ``/api`` and ``/api/…`` to the management API and the rest
to the console, and starts and stops both from the gateway's lifespan (the API first:
the console calls it).
"""

from __future__ import annotations

from typing import Any

from agentrouter.api.app import ManagementApi
from agentrouter.asgi import Receive, Scope, Send
from agentrouter.config import Settings
from agentrouter.console.app import Console

__all__ = ["Site", "build_site"]


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


class Site:
    def __init__(self, api: ManagementApi, console: Console) -> None:
        self.api = api
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _is_api(scope["path"]):
            await self.console(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    async def startup(self, core: Any = None) -> None:
        await self.api.startup(core)
        await self.console.startup(core)

    async def shutdown(self) -> None:
        try:
            await self.console.shutdown()
        finally:
            await self.api.shutdown()


def build_site(settings: Settings, api: ManagementApi | None = None) -> Site:
    """The management API (built from ``settings`` unless given) and the console on it."""
    from agentrouter.api import build_api

    api = api if api is not None else build_api(settings=settings)
    return Site(api, Console(settings, api))
