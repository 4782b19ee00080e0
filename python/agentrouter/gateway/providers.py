"""A configured provider at run time: its dialects, its URLs and its credentials.

Everything a request needs from its provider is computed here once: the full URL of
each route, the credential headers that replace the caller's (with the configured
OpenAI organization and project), the timeouts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from agentrouter.config import ProviderSettings
from agentrouter.gateway.errors import Dialect
from agentrouter.gateway.routing import ROUTES, RouteKind

__all__ = ["DIALECTS", "Provider"]

DIALECTS: dict[str, frozenset[Dialect]] = {
    "openai": frozenset({Dialect.OPENAI}),
    "anthropic": frozenset({Dialect.ANTHROPIC}),
    # The built-in mock answers in whichever dialect it is asked.
    "mock": frozenset({Dialect.OPENAI, Dialect.ANTHROPIC}),
}


class Provider:
    __slots__ = (
        "auth_headers",
        "bad_usage_logged",
        "default_headers",
        "dialects",
        "is_mock",
        "metrics_index",
        "name",
        "paths",
        "settings",
        "type",
    )

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.type = settings.type
        self.settings = settings
        self.dialects = DIALECTS[settings.type]
        self.is_mock = settings.type == "mock"
        # base_url names the API root including its version (".../v1"), as the SDKs do;
        # each route's request target is its path below that root.
        base_path = urlsplit(settings.base_url or "").path.rstrip("/")
        self.paths: dict[RouteKind, bytes] = {r.kind: (base_path + r.upstream_path).encode() for r in ROUTES.values()}
        key = (settings.api_key or "").encode()
        if b"\r" in key or b"\n" in key:
            raise ValueError(f"provider {settings.name!r}: the API key contains a line break")
        # The provider's credentials, which replace the caller's.
        if settings.type == "openai":
            self.auth_headers: tuple[tuple[bytes, bytes], ...] = ((b"Authorization", b"Bearer " + key),) if key else ()
            # Whom the key bills: the configuration's choice only (the caller's headers are dropped).
            if settings.organization:
                self.auth_headers += ((b"OpenAI-Organization", settings.organization.encode()),)
            if settings.project:
                self.auth_headers += ((b"OpenAI-Project", settings.project.encode()),)
        elif settings.type == "anthropic":
            self.auth_headers = ((b"x-api-key", key),) if key else ()
        else:
            self.auth_headers = ()
        self.metrics_index = 0
        """The provider's slot in the worker's metrics recorder (set by the gateway)."""
        self.bad_usage_logged = False
        """Whether this worker logged that the provider sent usage numbers that are no counts."""
        # Headers sent when the caller did not send their own (lower-case names).
        self.default_headers: tuple[tuple[bytes, bytes], ...] = (
            ((b"anthropic-version", settings.anthropic_version.encode()),) if settings.type == "anthropic" else ()
        )

    def speaks(self, dialect: Dialect) -> bool:
        return dialect in self.dialects

    def __repr__(self) -> str:
        # Never the credentials.
        return f"Provider({self.name!r}, {self.type})"
