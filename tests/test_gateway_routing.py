"""Model → provider: exact names and globs, the first provider listing a model wins."""

from __future__ import annotations

from agentrouter.gateway.routing import ROUTES, ModelRouter, RouteKind, is_glob


def test_exact_and_glob_first_listed_wins() -> None:
    router = ModelRouter(
        [
            ("slow", ["slow-gpt*"]),
            ("openai", ["gpt-4o", "gpt-*", "text-embedding-?-small"]),
            ("other", ["gpt-4o", "gpt-4o-mini", "claude-[0-9]*"]),
            ("anthropic", ["claude-*"]),
        ]
    )
    assert router.resolve("gpt-4o") == "openai"
    assert router.resolve("gpt-4o-mini") == "openai"  # openai's glob comes before other's exact name
    assert router.resolve("slow-gpt-4o") == "slow"
    assert router.resolve("text-embedding-3-small") == "openai"
    assert router.resolve("claude-3-opus") == "other"
    assert router.resolve("claude-x") == "anthropic"
    assert router.resolve("GPT-4O") is None  # case-sensitive, like the providers' own names
    assert router.resolve("llama") is None
    assert router.resolve("") is None
    assert [n for n, _ in router.exact_names] == ["gpt-4o", "gpt-4o-mini"]


def test_exact_name_before_a_later_glob() -> None:
    router = ModelRouter([("a", ["model-x"]), ("b", ["model-*"])])
    assert router.resolve("model-x") == "a" and router.resolve("model-y") == "b"
    router = ModelRouter([("a", ["model-*"]), ("b", ["model-x"])])
    assert router.resolve("model-x") == "a"


def test_cache_is_bounded() -> None:
    router = ModelRouter([("a", ["m-*"])])
    for i in range(ModelRouter.CACHE_LIMIT * 2 + 5):
        assert router.resolve(f"m-{i}") == "a"
        assert router.resolve(f"x-{i}") is None
    assert len(router._cache) <= ModelRouter.CACHE_LIMIT


def test_route_table() -> None:
    assert set(ROUTES) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
        "/v1/messages",
        "/v1/messages/count_tokens",
    }
    assert ROUTES["/v1/models"].method == "GET" and ROUTES["/v1/messages"].method == "POST"
    assert ROUTES["/v1/messages/count_tokens"].kind is RouteKind.COUNT_TOKENS
    assert is_glob("gpt-*") and is_glob("a?") and is_glob("[ab]") and not is_glob("gpt-4o")
