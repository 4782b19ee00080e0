"""The gateway: the ASGI app that authenticates, limits, routes, proxies and meters.

``agentrouter.gateway.app.create_app(settings)`` builds it; ``agentrouter.server``
serves it with Granian. Modules, one job each:

* ``errors``    error bodies in the caller's dialect (OpenAI or Anthropic)
* ``auth``      the single authentication entry point (key → record → limit decision)
* ``routing``   model name → provider; the route table of ``/v1``
* ``providers`` per-provider credentials and URLs
* ``upstream``  the hot-path HTTP client (HTTP/1.1 on an asyncio Protocol, keep-alive pool)
* ``mock``      the built-in offline provider
* ``usage``     per-key usage aggregation, token parsing, batched flushing
* ``health``    ``/healthz`` and ``/readyz``
* ``metrics``   ``/metrics``: per-worker counters, snapshot files, the exposition
"""
