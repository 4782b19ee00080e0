"""The management API on its own, for Granian::

    granian --interface asgi --host 127.0.0.1 --port 8081 agentrouter.api.devserver:app

Its settings come from ``load_settings()`` (``AGENTROUTER_CONFIG`` and the
``AGENTROUTER_*`` variables); it opens the core on their data directory at lifespan
startup (the secret from ``AGENTROUTER_SECRET`` or the data directory), runs the
monitor, and answers only ``/api``. The tests serve it
this way on loopback; ``agentrouter serve`` mounts the same app inside the gateway.
"""

from agentrouter.api.app import build_api

app = build_api()
