"""What a request is: the ``/v1`` route table, and which provider serves a model.

Both are built once from the settings; a lookup on the hot path is a dict access
(exact model names, and glob answers once they have been computed).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Generic, TypeVar

from agentrouter.gateway.errors import Dialect

__all__ = ["ROUTES", "ModelRouter", "Route", "RouteKind", "is_glob"]


class RouteKind(enum.Enum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
    MODELS = "models"
    MESSAGES = "messages"
    COUNT_TOKENS = "messages/count_tokens"


class Route:
    """One API path: its dialect, its method, and the upstream path it forwards to
    (relative to the provider's ``base_url``, which ends in ``/v1``)."""

    __slots__ = ("allow_header", "dialect", "index", "kind", "method", "path", "upstream_path")

    def __init__(self, kind: RouteKind, dialect: Dialect, method: str) -> None:
        self.kind = kind
        self.dialect = dialect
        self.method = method
        self.path = "/v1/" + kind.value
        self.upstream_path = "/" + kind.value
        self.allow_header = (b"allow", method.encode())
        self.index = -1
        """The route's place in ``ROUTES`` (the metrics recorder's slot for it)."""

    def __repr__(self) -> str:
        return f"Route({self.method} {self.path})"


ROUTES: dict[str, Route] = {
    r.path: r
    for r in (
        Route(RouteKind.CHAT, Dialect.OPENAI, "POST"),
        Route(RouteKind.COMPLETIONS, Dialect.OPENAI, "POST"),
        Route(RouteKind.EMBEDDINGS, Dialect.OPENAI, "POST"),
        Route(RouteKind.RESPONSES, Dialect.OPENAI, "POST"),
        Route(RouteKind.MODELS, Dialect.OPENAI, "GET"),
        Route(RouteKind.MESSAGES, Dialect.ANTHROPIC, "POST"),
        Route(RouteKind.COUNT_TOKENS, Dialect.ANTHROPIC, "POST"),
    )
}
"""Path → route. ``GET /v1/models/{id}`` is handled beside ``/v1/models``."""
for _i, _route in enumerate(ROUTES.values()):
    _route.index = _i


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


P = TypeVar("P")


class ModelRouter(Generic[P]):
    """Model name → the first provider (in configuration order) that lists it, by exact
    name or ``fnmatch`` glob (case-sensitive).

    Exact names are one dict lookup. Names that need the globs are answered once and
    remembered in a bounded cache (unknown names too, so a client hammering a wrong
    model costs a dict lookup, not a scan).
    """

    CACHE_LIMIT = 4096

    def __init__(self, providers: Sequence[tuple[P, Sequence[str]]]) -> None:
        self._exact: dict[str, tuple[int, P]] = {}
        self._globs: list[tuple[int, str, P]] = []
        names: list[tuple[str, P]] = []
        for index, (provider, models) in enumerate(providers):
            for model in models:
                if is_glob(model):
                    self._globs.append((index, model, provider))
                elif model not in self._exact:
                    self._exact[model] = (index, provider)
                    names.append((model, provider))
        self._names = tuple(names)
        self._cache: dict[str, P | None] = {}

    @property
    def exact_names(self) -> tuple[tuple[str, P], ...]:
        """The concrete model names, in configuration order, with the provider serving
        each (a name listed by two providers appears once, with the first)."""
        return self._names

    def resolve(self, model: str) -> P | None:
        hit = self._exact.get(model)
        if hit is not None and (not self._globs or hit[0] <= self._globs[0][0]):
            return hit[1]
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._scan(model, hit)
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[model] = found
        return found

    def _scan(self, model: str, hit: tuple[int, P] | None) -> P | None:
        limit = hit[0] if hit is not None else None
        for index, pattern, provider in self._globs:
            if limit is not None and index >= limit:
                break
            if fnmatchcase(model, pattern):
                return provider
        return hit[1] if hit is not None else None
