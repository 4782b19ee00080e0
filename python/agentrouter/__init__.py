"""AgentRouter: a self-hosted LLM API gateway.

Kept import-light on purpose: ``agentrouter.limiter`` must be usable without
pulling in the gateway.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agentrouter")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
