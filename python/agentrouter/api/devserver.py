"""The management API on its own, for Granian::

    granian --interface asgi --host 127.0.0.1 --port 8081 agentrouter.api.devserver:app

It opens the core from the environment (``AGENTROUTER_DATA_DIR``, ``AGENTROUTER_SECRET``)
at lifespan startup, runs the monitor, and answers only ``/api``. The tests serve it
this way on loopback; ``agentrouter serve`` mounts the same app inside the gateway.
"""

from agentrouter.api.app import build_api

app = build_api()
