"""The management API: keys, usage and alerts under ``/api`` (JSON, OpenAPI 3.1).

``build_api(core, settings=...)`` builds the ASGI app; see ``agentrouter.api.app``.
"""

from agentrouter.api.app import ManagementApi, build_api

__all__ = ["ManagementApi", "build_api"]
