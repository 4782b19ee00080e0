"""The web console: server-rendered pages at ``/``, a client of ``/api/v1``.

``build_site(settings)`` is what the gateway mounts outside ``/v1``: the management
API under ``/api`` and the console beside it (``site``). The console's pages call the
API in-process on the browser's behalf (``client``), so every check of ``/api/v1``
applies to them; see ``agentrouter.console.app``.
"""

from agentrouter.console.app import Console, build_console
from agentrouter.console.site import Site, build_site

__all__ = ["Console", "Site", "build_console", "build_site"]
