"""Settings: one frozen object, read once from a TOML file and ``AGENTROUTER_*`` variables.

The file::

    [server]
    host = "127.0.0.1"
    port = 8080
    workers = 4                  # default: the CPU count
    data_dir = "/var/lib/agentrouter"
    max_body_bytes = 33554432    # 32 MiB
    shutdown_timeout = 30        # seconds to drain in-flight requests on SIGTERM

    [[providers]]
    name = "openai"
    type = "openai"              # openai | anthropic | mock
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"   # or api_key = "sk-..."
    models = ["gpt-4o", "gpt-4o-*", "text-embedding-3-*"]

Every ``[server]`` setting is also read from ``AGENTROUTER_<NAME>`` (``AGENTROUTER_PORT``,
``AGENTROUTER_WORKERS``, ``AGENTROUTER_DATA_DIR``, ``AGENTROUTER_MAX_BODY_BYTES``, …),
every provider setting from ``AGENTROUTER_PROVIDERS__<PROVIDER>__<NAME>`` (for instance
``AGENTROUTER_PROVIDERS__OPENAI__BASE_URL``; lists are comma-separated; a provider named
only in the environment needs its ``TYPE``), and the file itself from
``AGENTROUTER_CONFIG``. The environment wins over the file. Variables this module does
not know are ignored: ``AGENTROUTER_API_KEY`` and ``AGENTROUTER_BASE_URL`` belong to
clients (see the product document), not to the server.

A model maps to the first provider that lists it (an exact name or an ``fnmatch``
glob). With no provider configured, the built-in ``mock`` provider serves its models.

Nothing here writes to ``os.environ``; the loaded ``Settings`` is passed to whoever
needs it. A bad setting raises ``ConfigError`` whose message names the field (and the
variable, when the value came from the environment).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ConfigError",
    "ProviderSettings",
    "Settings",
    "load_settings",
    "DEFAULT_MAX_BODY_BYTES",
]

ENV_PREFIX = "AGENTROUTER_"
PROVIDERS_ENV_PREFIX = "AGENTROUTER_PROVIDERS__"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024

ProviderType = Literal["openai", "anthropic", "mock"]
_Seconds = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it."""


class ProviderSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One upstream provider."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    type: ProviderType
    base_url: str | None = None
    """Joined with the route's path after ``/v1`` (``https://api.openai.com/v1`` +
    ``/chat/completions``). Not used by ``mock``."""
    api_key: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the key; read once at load time."""
    models: tuple[str, ...] = ()
    """Exact names and ``fnmatch`` globs (``gpt-4o-*``). A ``mock`` provider with no
    list serves all the mock's models."""
    connect_timeout: _Seconds = 10.0
    read_timeout: _Seconds = 600.0
    """Longest wait for the next byte from the upstream (headers or body)."""
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 512
    """Pool size of this provider's keep-alive client (per worker)."""
    keepalive_timeout: _Seconds = 30.0
    anthropic_version: str = "2023-06-01"
    """Sent to an ``anthropic`` provider when the caller sent no ``anthropic-version``."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the server needs; build it with ``load_settings``."""

    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    """None: the CPU count (``effective_workers``)."""
    data_dir: str | None = None
    """None: ``agentrouter.datadir.default_data_dir()``."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = DEFAULT_MAX_BODY_BYTES
    shutdown_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    usage_flush_interval: _Seconds = 1.0
    log_level: Literal["critical", "error", "warning", "warn", "info", "debug"] = "info"
    access_log: bool = False
    providers: tuple[ProviderSettings, ...] = ()

    @property
    def effective_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


# Server settings: file key == Settings field == AGENTROUTER_<FIELD upper>.
_SERVER_FIELDS = tuple(f for f in Settings.__struct_fields__ if f != "providers")
_PROVIDER_FIELDS = ProviderSettings.__struct_fields__
_LIST_FIELDS = {"models"}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the file (``path``, else ``AGENTROUTER_CONFIG``, else none), then the
    environment, then ``overrides`` (command-line flags, by field name), and check it all.
    """
    env = os.environ if env is None else env
    origin: dict[str, str] = {}  # field path -> where its value came from, for messages

    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
        origin["$file"] = f"{ENV_PREFIX}CONFIG={path}"
    raw = _read_file(Path(path), origin.get("$file")) if path is not None else {}

    data = _flatten_file(raw, str(path))
    _apply_env(data, env, origin)
    for name, value in (overrides or {}).items():
        if value is not None:
            if name not in _SERVER_FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            data[name] = value
            origin[f"server.{name}"] = "command line"
    return _validate(data, env, origin)


def _read_file(path: Path, named_by: str | None) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        by = f" (named by {named_by})" if named_by else ""
        raise ConfigError(f"cannot read configuration file {str(path)!r}{by}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _flatten_file(raw: dict[str, Any], where: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "server":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: server: expected a table ([server])")
            for skey, svalue in value.items():
                if skey not in _SERVER_FIELDS:
                    raise ConfigError(f"{where}: server.{skey}: unknown setting")
                data[skey] = svalue
        elif key == "providers":
            if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
                raise ConfigError(f"{where}: providers: expected an array of tables ([[providers]])")
            data["providers"] = [dict(p) for p in value]
        else:
            raise ConfigError(f"{where}: {key}: unknown setting (expected [server] or [[providers]])")
    return data


def _env_key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def _apply_env(data: dict[str, Any], env: Mapping[str, str], origin: dict[str, str]) -> None:
    for field in _SERVER_FIELDS:
        var = ENV_PREFIX + field.upper()
        if var in env:
            data[field] = env[var]
            origin[f"server.{field}"] = var

    providers: list[dict[str, Any]] = data.setdefault("providers", [])
    by_key = {_env_key(str(p.get("name", ""))): p for p in providers}
    for var in sorted(env):
        if not var.startswith(PROVIDERS_ENV_PREFIX):
            continue
        rest = var[len(PROVIDERS_ENV_PREFIX):]
        pkey, sep, field = rest.partition("__")
        field = field.lower()
        if not sep or not pkey or field not in _PROVIDER_FIELDS or field == "name":
            raise ConfigError(
                f"{var}: expected {PROVIDERS_ENV_PREFIX}<PROVIDER>__<SETTING> with SETTING one of "
                + ", ".join(f.upper() for f in _PROVIDER_FIELDS if f != "name")
            )
        provider = by_key.get(pkey)
        if provider is None:
            provider = {"name": pkey.lower()}
            providers.append(provider)
            by_key[pkey] = provider
        value: Any = env[var]
        if field in _LIST_FIELDS:
            value = [v.strip() for v in value.split(",") if v.strip()]
        provider[field] = value
        origin[f"providers.{pkey}.{field}"] = var


def _validate(data: dict[str, Any], env: Mapping[str, str], origin: dict[str, str]) -> Settings:
    where = f" (configuration file from {origin['$file']})" if "$file" in origin else ""
    providers = data.get("providers") or []
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), providers, origin) + where) from None

    seen: set[str] = set()
    resolved: list[ProviderSettings] = []
    for i, p in enumerate(settings.providers):
        label = f"providers[{i}] ({p.name!r})"
        if p.name in seen:
            raise ConfigError(f"{label}.name: duplicate provider name")
        seen.add(p.name)
        resolved.append(_check_provider(p, label, env))
    if not resolved:
        resolved.append(_check_provider(ProviderSettings(name="mock", type="mock"), "providers[0]", env))
    return msgspec.structs.replace(settings, providers=tuple(resolved))


def _check_provider(p: ProviderSettings, label: str, env: Mapping[str, str]) -> ProviderSettings:
    from agentrouter.gateway.mock import MODELS as MOCK_MODELS

    changes: dict[str, Any] = {}
    if p.type == "mock":
        if not p.models:
            changes["models"] = MOCK_MODELS
    else:
        if not p.base_url:
            raise ConfigError(f"{label}.base_url: required for a provider of type {p.type!r}")
        if not p.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{label}.base_url: expected an http:// or https:// URL, got {p.base_url!r}")
        changes["base_url"] = p.base_url.rstrip("/")
        if p.api_key and p.api_key_env:
            raise ConfigError(f"{label}.api_key: give api_key or api_key_env, not both")
        if p.api_key_env:
            key = env.get(p.api_key_env)
            if not key:
                raise ConfigError(f"{label}.api_key_env: environment variable {p.api_key_env} is not set")
            changes["api_key"] = key
        if not p.models:
            raise ConfigError(f"{label}.models: list at least one model name or pattern")
    for j, m in enumerate(p.models):
        if not m or m != m.strip():
            raise ConfigError(f"{label}.models[{j}]: empty or padded model name {m!r}")
    return msgspec.structs.replace(p, **changes) if changes else p


def _explain(message: str, providers: list[dict[str, Any]], origin: dict[str, str]) -> str:
    """Turn msgspec's ``... - at `$.providers[0].type``` into ``providers[0].type: ...``."""
    text, sep, at = message.rpartition(" - at `")
    if not sep:
        # "Object contains unknown field `x`" carries no path at the top level.
        return f"server: {message}"
    path = at.rstrip("`").removeprefix("$").lstrip(".")
    if path.startswith("providers["):
        index_s, _, rest = path[len("providers["):].partition("]")
        field = rest.lstrip(".")
        try:
            index = int(index_s)
            name = providers[index].get("name")
        except (ValueError, IndexError, AttributeError):
            name = None
        label = f"providers[{index_s}]" + (f" ({name!r})" if name else "")
        var = origin.get(f"providers.{_env_key(str(name))}.{field}") if name else None
        field_label = f"{label}.{field}" if field else label
        return f"{field_label}: {text}" + (f" (from {var})" if var else "")
    field = path.split(".", 1)[0].split("[", 1)[0]
    var = origin.get(f"server.{field}")
    return f"server.{path}: {text}" + (f" (from {var})" if var else "")
