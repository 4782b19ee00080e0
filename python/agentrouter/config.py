"""Settings: one frozen object, read once from a TOML file and ``AGENTROUTER_*`` variables.

The file::

    [server]
    host = "127.0.0.1"
    port = 8080
    workers = 4                  # default: the CPU count
    data_dir = "/var/lib/agentrouter"   # "~" is expanded; default: $XDG_DATA_HOME/agentrouter
    max_body_bytes = 33554432    # 32 MiB
    body_idle_timeout = 30       # seconds a request body may pause between two chunks (408)
    body_timeout = 300           # seconds a request body may take in all (408)
    cors_allow_origins = []      # browser origins allowed by CORS ("https://app.example.com", "*")
    limiter_slots = 65536        # buckets in the shared limiter region (at most this many live keys)
    limiter_url = "redis://redis.internal:6379/0"   # buckets in Redis, for several hosts (default: none)
    limiter_failure_mode = "local"   # while Redis is unreachable: local | open | closed
    limiter_timeout = 0.25       # seconds any Redis call may take before the failure mode decides
    store_url = "postgresql://agentrouter@db.internal/agentrouter"   # default: the SQLite file in data_dir
    store_pool_min = 1           # PostgreSQL connections each process keeps open
    store_pool_max = 10          # and at most
    store_connect_timeout = 5    # seconds to connect to PostgreSQL (statements: 30 s)
    usage_buffer_records = 100000   # request-log records a worker buffers while the store is down
    shutdown_timeout = 30        # seconds to drain in-flight requests on SIGTERM
    request_log_retention_days = 30
    alert_webhook_url = "https://hooks.example.com/agentrouter"   # default: none
    monitor_enabled = true       # false: no detector runs (the request log is still pruned)
    monitor_interval = 60        # seconds between monitor runs
    metrics_enabled = true       # GET /metrics (Prometheus); false: 404, nothing counted
    metrics_require_key = true   # /metrics needs a management key; false: open

    [monitor]                    # thresholds of the unusual-usage detectors
    volume_factor = 5            # (DetectorConfig; reasoning in agentrouter.monitor.detectors)

    [accounts]                   # people: registration, sessions, sign-in throttling
    registration = "invite"      # open | domains | invite
    registration_domains = ["example.com"]   # for "domains"
    session_days = 30

    [smtp]                       # outgoing mail; without host: the server log and <data dir>/outbox/
    host = "smtp.example.com"
    port = 587                   # default: 587 (starttls), 465 (tls), 25 (none)
    security = "starttls"        # starttls | tls | none
    user = "agentrouter"
    password_env = "SMTP_PASSWORD"   # or password = "..."
    sender = "AgentRouter <noreply@example.com>"

    [oauth.github]               # a provider without client_id is not offered
    client_id = "..."
    client_secret_env = "GITHUB_CLIENT_SECRET"   # or client_secret = "..."

    [oauth.google]
    client_id = "....apps.googleusercontent.com"
    client_secret_env = "GOOGLE_CLIENT_SECRET"

    [[providers]]
    name = "openai"
    type = "openai"              # openai | anthropic | mock
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"   # or api_key = "sk-..."
    models = ["gpt-4o", "gpt-4o-*", "text-embedding-3-*"]
    organization = "org-..."     # openai only: sent as OpenAI-Organization (default: none)
    project = "proj_..."         # openai only: sent as OpenAI-Project (default: none)

A caller's own ``OpenAI-Organization`` and ``OpenAI-Project`` headers are never
forwarded (they would choose whom the provider's key bills): only these settings
send them.

Every ``[server]`` setting is also read from ``AGENTROUTER_<NAME>`` (``AGENTROUTER_PORT``,
``AGENTROUTER_WORKERS``, ``AGENTROUTER_DATA_DIR``, ``AGENTROUTER_MAX_BODY_BYTES``,
``AGENTROUTER_LIMITER_SLOTS``, ``AGENTROUTER_LIMITER_URL``, ``AGENTROUTER_CORS_ALLOW_ORIGINS``
(comma-separated), …),
the server secret from ``AGENTROUTER_SECRET`` (``secret``; at least 32 bytes; without it
the secret is the data directory's ``secret`` file, created on first run),
every provider setting from ``AGENTROUTER_PROVIDERS__<PROVIDER>__<NAME>`` (for instance
``AGENTROUTER_PROVIDERS__OPENAI__BASE_URL``; lists are comma-separated; a provider named
only in the environment needs its ``TYPE``), every ``[monitor]`` threshold from
``AGENTROUTER_MONITOR_<NAME>`` (``AGENTROUTER_MONITOR_VOLUME_FACTOR``), every ``[accounts]``
setting from ``AGENTROUTER_ACCOUNTS_<NAME>``, every ``[smtp]`` one from
``AGENTROUTER_SMTP_<NAME>`` (``AGENTROUTER_SMTP_HOST``), every ``[oauth.<provider>]`` one
from ``AGENTROUTER_OAUTH_<PROVIDER>_<NAME>`` (``AGENTROUTER_OAUTH_GITHUB_CLIENT_ID``), and
the file itself from ``AGENTROUTER_CONFIG``. The environment wins over the file; an empty
``AGENTROUTER_ALERT_WEBHOOK_URL`` means no webhook. Other variables this module does
not know are ignored: ``AGENTROUTER_API_KEY`` and ``AGENTROUTER_BASE_URL`` belong to
clients (see the product document), not to the server.

A model maps to the first provider that lists it (an exact name or an ``fnmatch``
glob). With no provider configured, the built-in ``mock`` provider serves its models.

Nothing here writes to ``os.environ``, and nothing else reads it for a setting: the
loaded ``Settings`` is passed to whoever needs it (``Core.from_settings``, the gateway,
the management API and its monitor, the CLI). A bad setting raises ``ConfigError``
whose message names the field (and the variable, when the value came from the
environment).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from agentrouter.datadir import DB_FILE, default_data_dir
from agentrouter.errors import AgentRouterError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ConfigError",
    "DetectorConfig",
    "ProviderSettings",
    "Settings",
    "load_settings",
    "redact_url",
]

ENV_PREFIX = "AGENTROUTER_"
PROVIDERS_ENV_PREFIX = "AGENTROUTER_PROVIDERS__"
MONITOR_ENV_PREFIX = "AGENTROUTER_MONITOR_"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_LIMITER_SLOTS = 65536
MAX_LIMITER_SLOTS = 1 << 24  # 16 Mi buckets: a 1 GiB region file
MIN_SECRET_BYTES = 32
MAX_LIMITER_TIMEOUT = 5.0
LIMITER_URL_SCHEMES = ("redis://", "rediss://", "unix://")
HOUR = 3600.0

ProviderType = Literal["openai", "anthropic", "mock"]
_Seconds = Annotated[float, msgspec.Meta(gt=0)]
_Positive = Annotated[float, msgspec.Meta(gt=0)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]
_Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
_Count = Annotated[int, msgspec.Meta(ge=1)]


class ConfigError(AgentRouterError):
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
    ca_file: str | None = None
    """A PEM bundle to trust instead of the system's store for an ``https`` upstream
    (a private CA, a TLS-inspecting proxy)."""
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
    organization: str | None = None
    """``openai`` only: sent as ``OpenAI-Organization`` (the caller's is never forwarded)."""
    project: str | None = None
    """``openai`` only: sent as ``OpenAI-Project`` (the caller's is never forwarded)."""


class DetectorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the four unusual-usage detectors: the ``[monitor]`` table of the
    file, ``AGENTROUTER_MONITOR_<NAME>`` in the environment. The reasoning behind each
    default is in ``agentrouter.monitor.detectors``."""

    # (1) volume far above the key's own baseline
    volume_factor: Annotated[float, msgspec.Meta(gt=1)] = 5.0
    volume_min_requests: _Count = 100
    volume_baseline_days: _Count = 7
    volume_min_active_days: _Count = 3

    # (2) use in hours when the key is normally idle
    unusual_hour_baseline_days: _Count = 14
    unusual_hour_min_active_days: _Count = 7
    unusual_hour_idle_fraction: _Fraction = 0.1
    unusual_hour_neighbour_hours: Annotated[int, msgspec.Meta(ge=0, le=11)] = 1
    unusual_hour_min_requests: _Count = 5

    # (3) a high failure rate
    failure_rate: _Fraction = 0.5
    failure_margin: _Fraction = 0.25
    failure_min_requests: _Count = 20
    failure_baseline_days: _Count = 7
    failure_baseline_min_requests: _Count = 100

    # (4) a client IP never seen before for the key
    new_ip_learning_hours: _NonNegative = 24.0
    new_ip_lookback_hours: _Positive = 24.0
    new_ip_ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 32
    new_ip_ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64

    # one alert per condition: after an alert of a kind for a key, the same kind
    # stays quiet for that key this many seconds (new_ip: per network, forever)
    volume_spike_cooldown: _NonNegative = 6 * HOUR
    unusual_hour_cooldown: _NonNegative = 6 * HOUR
    failure_rate_cooldown: _NonNegative = 6 * HOUR

    def cooldown(self, kind: str) -> float:
        return float(getattr(self, f"{kind}_cooldown", 0.0))

    @property
    def history_days(self) -> int:
        """How far back the runner reads hourly history for these detectors."""
        return max(self.volume_baseline_days, self.unusual_hour_baseline_days, self.failure_baseline_days) + 1


RegistrationMode = Literal["open", "domains", "invite"]
SmtpSecurity = Literal["starttls", "tls", "none"]

# argon2-cffi's defaults (RFC 9106's second recommended option): the floor of the settings.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 65536
ARGON2_PARALLELISM = 4


class AccountsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """People and their sessions (``[accounts]``, ``AGENTROUTER_ACCOUNTS_<NAME>``);
    the reasoning is in ``agentrouter.accounts``."""

    registration: RegistrationMode = "invite"
    """Who may create an account with email and password (and a first OAuth sign-in):
    ``open`` anyone, ``domains`` addresses of ``registration_domains`` only, ``invite``
    (the default, so a fresh gateway on a network is not open to strangers) only with
    an admin's invitation link."""
    registration_domains: tuple[str, ...] = ()
    """Email domains allowed to register under ``registration = "domains"`` (exact,
    case-insensitive: ``example.com`` does not admit ``sub.example.com``)."""
    session_days: _Positive = 30.0
    """A session ends this long after its sign-in (the product document's 30 days)."""
    verification_hours: _Positive = 48.0
    """An email verification link works this long (once)."""
    reset_minutes: _Positive = 30.0
    """A password reset link works this long (once)."""
    invitation_days: _Positive = 7.0
    """An invitation works this long (once)."""
    second_factor_minutes: _Positive = 5.0
    """Time to enter the TOTP code after a password or OAuth sign-in."""
    signin_account_attempts: _Count = 10
    """Sign-in attempts per account per ``signin_account_interval`` seconds."""
    signin_account_interval: _Seconds = 900.0
    signin_ip_attempts: _Count = 50
    """Sign-in attempts per client IP per ``signin_ip_interval`` seconds."""
    signin_ip_interval: _Seconds = 900.0
    register_ip_attempts: _Count = 20
    """Registrations and password-reset requests (together) per client IP per
    ``register_ip_interval`` seconds: each registration costs an Argon2 hash and a
    strength estimate, so a client cannot make the server do that work unthrottled."""
    register_ip_interval: _Seconds = 3600.0
    throttle_buckets: Annotated[int, msgspec.Meta(ge=64, le=1 << 20)] = 16384
    """Buckets per kind (accounts, client IPs) in the throttle's own limiter region;
    names are spread over them by a keyed hash."""
    password_time_cost: Annotated[int, msgspec.Meta(ge=ARGON2_TIME_COST, le=100)] = ARGON2_TIME_COST
    password_memory_kib: Annotated[int, msgspec.Meta(ge=ARGON2_MEMORY_KIB, le=4 << 20)] = ARGON2_MEMORY_KIB
    password_parallelism: Annotated[int, msgspec.Meta(ge=ARGON2_PARALLELISM, le=64)] = ARGON2_PARALLELISM
    """Argon2id parameters, at or above argon2-cffi's defaults. Raising one rehashes
    each password at its owner's next sign-in."""
    hash_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """Threads per process that hash passwords (off the event loop, so a burst of
    sign-ins never stalls ``/v1``); more waiting hashes queue."""


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Outgoing mail (``[smtp]``, ``AGENTROUTER_SMTP_<NAME>``). Without ``host`` every
    mail is written to the server log and to ``<data dir>/outbox/`` as an ``.eml``
    file, so a newcomer can register offline."""

    host: str | None = None
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    """Default by ``security``: 587 (starttls), 465 (tls), 25 (none)."""
    security: SmtpSecurity = "starttls"
    user: str | None = None
    password: str | None = None
    password_env: str | None = None
    """Name of the environment variable holding the password; read once at load time."""
    sender: str | None = None
    """The From address; default ``AgentRouter <agentrouter@HOSTNAME>``."""
    timeout: _Seconds = 30.0
    ca_file: str | None = None
    """A PEM bundle to trust instead of the system's store (a private CA)."""

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]

    def __repr__(self) -> str:
        return (
            f"SmtpSettings(host={self.host!r}, port={self.effective_port}, security={self.security!r}, "
            f"user={self.user!r}, password={'***' if self.password else None}, sender={self.sender!r})"
        )


class OAuthProviderSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One OAuth provider (``[oauth.github]``, ``[oauth.google]``;
    ``AGENTROUTER_OAUTH_<PROVIDER>_<NAME>``). The endpoints are overridable so tests
    run against fake providers on loopback; the defaults are the real ones."""

    client_id: str | None = None
    """None: the provider is not offered."""
    client_secret: str | None = None
    client_secret_env: str | None = None
    """Name of the environment variable holding the secret; read once at load time."""
    authorize_url: str | None = None
    """GitHub: default ``https://github.com/login/oauth/authorize``."""
    access_token_url: str | None = None
    """GitHub: default ``https://github.com/login/oauth/access_token``."""
    api_base_url: str | None = None
    """GitHub: default ``https://api.github.com/`` (``/user``, ``/user/emails``)."""
    server_metadata_url: str | None = None
    """Google: the OpenID Connect discovery document, default
    ``https://accounts.google.com/.well-known/openid-configuration``."""

    def __repr__(self) -> str:
        secret = "***" if self.client_secret else None
        return f"OAuthProviderSettings(client_id={self.client_id!r}, client_secret={secret})"


OAUTH_DEFAULTS: dict[str, dict[str, str]] = {
    "github": {
        "authorize_url": "https://github.com/login/oauth/authorize",
        "access_token_url": "https://github.com/login/oauth/access_token",
        "api_base_url": "https://api.github.com/",
    },
    "google": {"server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration"},
}
OAUTH_PROVIDERS = tuple(OAUTH_DEFAULTS)


class OAuthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[oauth.github]`` and ``[oauth.google]``; a provider is offered when its
    ``client_id`` is set (then its secret is required)."""

    github: OAuthProviderSettings = msgspec.field(default_factory=OAuthProviderSettings)
    google: OAuthProviderSettings = msgspec.field(default_factory=OAuthProviderSettings)

    def provider(self, name: str) -> OAuthProviderSettings | None:
        """The settings of ``name`` when it is offered (has a client id), else None."""
        found: OAuthProviderSettings | None = getattr(self, name, None) if name in OAUTH_PROVIDERS else None
        return found if found is not None and found.client_id else None

    @property
    def offered(self) -> tuple[str, ...]:
        """The providers with a client id, in a fixed order."""
        return tuple(p for p in OAUTH_PROVIDERS if self.provider(p) is not None)


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the server needs; build it with ``load_settings``."""

    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    """None: the CPU count (``effective_workers``)."""
    data_dir: str | None = None
    """Where the database, the limiter region and the secret live. ``load_settings``
    expands ``~`` and fills in the default (``$XDG_DATA_HOME/agentrouter``, else
    ``~/.local/share/agentrouter``), so every process reading the same settings
    (``serve``, its workers, the CLI) agrees; read it as ``data_path``."""
    secret: str | None = None
    """The server secret under which keys are digested (``AGENTROUTER_SECRET``; at
    least 32 bytes). None: the data directory's ``secret`` file, created on first run.
    Never shown by ``repr``."""
    limiter_slots: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMITER_SLOTS)] = DEFAULT_LIMITER_SLOTS
    """Buckets in the shared limiter region: one per live key. Every process sharing a
    data directory must use the same number (the region file records it)."""
    limiter_url: str | None = None
    """Redis (7.0 or later, or Valkey) holding the buckets, the revoked flags and the
    key-set generation of every host: ``redis://[user:password@]host:port/db``,
    ``rediss://…`` (TLS) or ``unix:///path/redis.sock?db=0``. None (the default): this
    host's shared-memory region (``limiter_slots``) decides alone. Its password is
    never shown (``redacted_limiter_url``)."""
    limiter_failure_mode: Literal["local", "open", "closed"] = "local"
    """What decides while Redis cannot be reached (``limits.failover``): ``local``, this
    host's shared-memory limiter with the same limits (so they hold per host); ``open``,
    every valid key admitted without a limit; ``closed``, every request refused with 503."""
    limiter_timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_LIMITER_TIMEOUT)] = 0.25
    """Seconds any call to Redis may take (connecting included) before it counts as a
    failure and the failure mode answers; never retried (a retry could charge twice)."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = DEFAULT_MAX_BODY_BYTES
    """A larger request body gets 413 (a larger ``Content-Length`` before any is read)."""
    body_idle_timeout: _Seconds = 30.0
    """Longest pause between two chunks of a request body (and before the first)
    before the gateway answers 408 and closes the connection. Clients send a body as
    fast as their link allows; 30 s outlasts TCP's retransmission backoff on a lossy
    link, while a caller that declared a length and went silent no longer holds a
    connection and a request slot forever."""
    body_timeout: _Seconds = 300.0
    """Longest time a whole request body may take: 300 s lets the largest default
    body (32 MiB) arrive at about 110 KB/s, and bounds a trickle that sends a byte
    just often enough to beat ``body_idle_timeout``."""
    cors_allow_origins: tuple[str, ...] = ()
    """Browser origins allowed by CORS (``https://app.example.com``, exact; ``*`` for
    any, then never with credentials). None by default: no CORS headers at all."""
    store_url: str | None = None
    """Where keys, usage and the request log live: None (the default) for the SQLite
    file ``agentrouter.db`` in ``data_dir``, ``sqlite:///ABSOLUTE/PATH`` for another
    file, or ``postgresql://user:password@host:port/database`` (``postgres://`` too;
    asyncpg's query parameters, e.g. ``?sslmode=require``) for PostgreSQL. Shown
    without its password (``redact_url``)."""
    store_pool_min: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 1
    """PostgreSQL: connections each process keeps open."""
    store_pool_max: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    """PostgreSQL: at most this many connections per process (a server of W workers
    opens up to W × (this + 1): each worker's usage writer has one of its own)."""
    store_connect_timeout: _Seconds = 5.0
    """PostgreSQL: seconds to connect (or to get a pooled connection) before the
    store counts as unavailable (503 on the management API, ``/readyz`` not ready). A
    statement may take up to 30 s (or this, if longer) before it counts as such."""
    usage_buffer_records: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Request-log records each worker keeps while the store cannot be written (about
    300 bytes each); past that the newest are dropped, counted and logged (the key
    totals still count them)."""
    shutdown_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    usage_flush_interval: _Seconds = 1.0
    usage_writer: Literal["process", "inline"] = "process"
    """Who writes usage batches to the store: "process", a child process of each
    worker at nice 10 (``agentrouter.store.writer``; keeps SQLite's CPU bursts off
    the serving loop), or "inline", the worker itself (one process fewer; for
    embedding and tests, at a cost in tail latency)."""
    log_level: Literal["critical", "error", "warning", "warn", "info", "debug"] = "info"
    access_log: bool = False
    metrics_enabled: bool = True
    """Serve ``GET /metrics`` (the Prometheus text format, summed over the workers);
    false: no counting at all, and ``/metrics`` answers 404."""
    metrics_require_key: bool = True
    """``/metrics`` needs a management key (scope "manage"), refused like ``/api``;
    false: anyone who reaches the port may read it (bind it to a private network)."""

    # The request log and the unusual-usage monitor (agentrouter.monitor).
    request_log_retention_days: _Positive = 30.0
    """Request-log rows older than this are deleted (hourly rollups and known client
    IPs are kept ``rollup_retention_days``, so the monitor's baselines outlive the log)."""
    rollup_retention_days: _Positive = 400.0
    alert_webhook_url: str | None = None
    """POSTed a JSON document for each new alert; none: alerts are only stored."""
    alert_webhook_timeout: _Seconds = 5.0
    alert_webhook_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    """Retries after a failed POST (connection error, timeout, 408, 429 or 5xx),
    with exponential backoff from ``alert_webhook_backoff`` seconds."""
    alert_webhook_backoff: _NonNegative = 0.5
    alert_webhook_rounds: _Count = 5
    """Monitor runs that try an undelivered alert again before giving up on it."""
    monitor_enabled: bool = True
    """false: no detector runs; the monitor's task still prunes the request log."""
    monitor_interval: _Seconds = 60.0
    """Seconds between two runs of the monitor (one process of a server runs it)."""
    monitor: DetectorConfig = msgspec.field(default_factory=DetectorConfig)
    """The detectors' thresholds (``[monitor]``, ``AGENTROUTER_MONITOR_<NAME>``)."""

    public_url: str | None = None
    """The address people reach this server at (``https://gateway.example.com``), used
    in the links of mails (verification, reset, invitations, the first admin's setup);
    an ``https`` one also makes session cookies ``Secure`` with the ``__Host-`` prefix.
    Default: ``http://HOST:PORT`` (``127.0.0.1`` for a wildcard host)."""
    accounts: AccountsSettings = msgspec.field(default_factory=AccountsSettings)
    """Registration, sessions and sign-in throttling (``[accounts]``)."""
    smtp: SmtpSettings = msgspec.field(default_factory=SmtpSettings)
    """Outgoing mail (``[smtp]``)."""
    oauth: OAuthSettings = msgspec.field(default_factory=OAuthSettings)
    """GitHub and Google sign-in (``[oauth.github]``, ``[oauth.google]``)."""

    providers: tuple[ProviderSettings, ...] = ()

    @property
    def effective_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def data_path(self) -> Path:
        """``data_dir`` as a path (the default one when unset)."""
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, else ``http://HOST:PORT``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def https(self) -> bool:
        """Whether people reach the server over HTTPS (``public_url`` is https): session
        cookies are then ``Secure`` and ``__Host-`` prefixed."""
        return self.base_url.startswith("https://")

    @property
    def store_backend(self) -> Literal["sqlite", "postgresql"]:
        return "postgresql" if self.store_url and _is_postgres(self.store_url) else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (the default store, or a ``sqlite:///`` URL)."""
        if self.store_url and self.store_url.startswith("sqlite:///"):
            return Path(urllib.parse.unquote(self.store_url[len("sqlite://") :]))
        return self.data_path / DB_FILE

    @property
    def secret_bytes(self) -> bytes | None:
        """``secret`` as the bytes the digester takes (None: use the data directory's file)."""
        return None if self.secret is None else _secret_bytes(self.secret)

    @property
    def redacted_limiter_url(self) -> str | None:
        """``limiter_url`` with its password replaced by ``***``: the form for messages."""
        return None if self.limiter_url is None else redact_url(self.limiter_url)

    def __repr__(self) -> str:
        # The secret (and providers' keys) must not reach a log through a repr.
        shown = {f: getattr(self, f) for f in self.__struct_fields__ if f not in ("secret", "providers")}
        # (smtp and oauth hide their own passwords and client secrets in their reprs)
        shown["secret"] = None if self.secret is None else "***"
        shown["limiter_url"] = self.redacted_limiter_url
        shown["store_url"] = None if self.store_url is None else redact_url(self.store_url)
        shown["providers"] = tuple(p.name for p in self.providers)
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` without its password (in the authority or a ``password`` parameter),
    for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        if ":" in userinfo:
            netloc = f"{user}:***@{hostport}"
        elif parts.scheme.lower() in ("redis", "rediss", "unix"):
            netloc = f"***@{hostport}"  # Redis reads a lone redis://secret@host as the password
        else:
            netloc = f"{user}@{hostport}"  # PostgreSQL reads it as the user
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = urllib.parse.urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_bytes(secret: str) -> bytes:
    # Environment values carry undecodable bytes as surrogates: give them back as bytes.
    return secret.encode("utf-8", "surrogateescape")


# Server settings: file key == Settings field == AGENTROUTER_<FIELD upper>.
_TABLES = ("providers", "monitor", "accounts", "smtp", "oauth")
_SERVER_FIELDS = tuple(f for f in Settings.__struct_fields__ if f not in _TABLES)
_PROVIDER_FIELDS = ProviderSettings.__struct_fields__
_MONITOR_FIELDS = DetectorConfig.__struct_fields__
# AGENTROUTER_MONITOR_ENABLED is a server setting, AGENTROUTER_MONITOR_<threshold> a
# [monitor] one: the two sets of names must never meet.
assert not {f"monitor_{f}" for f in _MONITOR_FIELDS} & set(_SERVER_FIELDS)
# The same for AGENTROUTER_ACCOUNTS_*, AGENTROUTER_SMTP_* and AGENTROUTER_OAUTH_*: no
# server setting may start with those words.
assert not [f for f in _SERVER_FIELDS if f.startswith(("accounts_", "smtp_", "oauth_"))]
_ACCOUNTS_FIELDS = AccountsSettings.__struct_fields__
_SMTP_FIELDS = SmtpSettings.__struct_fields__
_OAUTH_FIELDS = OAuthProviderSettings.__struct_fields__
_ACCOUNTS_LIST_FIELDS = {"registration_domains"}
_LIST_FIELDS = {"models"}
_SERVER_LIST_FIELDS = {"cors_allow_origins"}


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
    by = f" (named by {named_by})" if named_by else ""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}{by}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}{by}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None


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
        elif key == "monitor":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: monitor: expected a table ([monitor])")
            for mkey in value:
                if mkey not in _MONITOR_FIELDS:
                    raise ConfigError(f"{where}: monitor.{mkey}: unknown setting")
            data["monitor"] = dict(value)
        elif key in ("accounts", "smtp"):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key}: expected a table ([{key}])")
            fields = _ACCOUNTS_FIELDS if key == "accounts" else _SMTP_FIELDS
            for tkey in value:
                if tkey not in fields:
                    raise ConfigError(f"{where}: {key}.{tkey}: unknown setting")
            data[key] = dict(value)
        elif key == "oauth":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: oauth: expected tables ([oauth.github], [oauth.google])")
            oauth: dict[str, Any] = {}
            for provider, table in value.items():
                if provider not in OAUTH_PROVIDERS:
                    raise ConfigError(
                        f"{where}: oauth.{provider}: unknown provider (expected {', '.join(OAUTH_PROVIDERS)})"
                    )
                if not isinstance(table, dict):
                    raise ConfigError(f"{where}: oauth.{provider}: expected a table ([oauth.{provider}])")
                for tkey in table:
                    if tkey not in _OAUTH_FIELDS:
                        raise ConfigError(f"{where}: oauth.{provider}.{tkey}: unknown setting")
                oauth[provider] = dict(table)
            data["oauth"] = oauth
        else:
            raise ConfigError(
                f"{where}: {key}: unknown setting (expected [server], [monitor], [accounts], [smtp], "
                "[oauth.<provider>] or [[providers]])"
            )
    return data


def _env_key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def _apply_env(data: dict[str, Any], env: Mapping[str, str], origin: dict[str, str]) -> None:
    for field in _SERVER_FIELDS:
        var = ENV_PREFIX + field.upper()
        if var in env:
            value: Any = env[var]
            if field in _SERVER_LIST_FIELDS:
                value = [v.strip() for v in value.split(",") if v.strip()]
            data[field] = value
            origin[f"server.{field}"] = var
    if data.get("alert_webhook_url") == "":
        data["alert_webhook_url"] = None  # an empty variable switches the webhook off

    for var in sorted(env):
        if not var.startswith(MONITOR_ENV_PREFIX) or var[len(ENV_PREFIX) :].lower() in _SERVER_FIELDS:
            continue
        field = var[len(MONITOR_ENV_PREFIX) :].lower()
        if field not in _MONITOR_FIELDS:
            raise ConfigError(
                f"{var}: unknown setting; {MONITOR_ENV_PREFIX}<NAME> takes NAME from: "
                + ", ".join(f.upper() for f in _MONITOR_FIELDS)
            )
        data.setdefault("monitor", {})[field] = env[var]
        origin[f"monitor.{field}"] = var

    for table, fields in (("accounts", _ACCOUNTS_FIELDS), ("smtp", _SMTP_FIELDS)):
        prefix = f"{ENV_PREFIX}{table.upper()}_"
        for var in sorted(env):
            if not var.startswith(prefix):
                continue
            field = var[len(prefix) :].lower()
            if field not in fields:
                raise ConfigError(
                    f"{var}: unknown setting; {prefix}<NAME> takes NAME from: " + ", ".join(f.upper() for f in fields)
                )
            value = env[var]
            if field in _ACCOUNTS_LIST_FIELDS:
                value = [v.strip() for v in value.split(",") if v.strip()]
            if table == "smtp" and value == "" and field != "password":
                continue  # an empty variable leaves the setting unset
            data.setdefault(table, {})[field] = value
            origin[f"{table}.{field}"] = var
    oauth_prefix = f"{ENV_PREFIX}OAUTH_"
    for var in sorted(env):
        if not var.startswith(oauth_prefix):
            continue
        rest = var[len(oauth_prefix) :]
        pname, _, field = rest.partition("_")
        pname, field = pname.lower(), field.lower()
        if pname not in OAUTH_PROVIDERS or field not in _OAUTH_FIELDS:
            raise ConfigError(
                f"{var}: expected {oauth_prefix}<PROVIDER>_<NAME> with PROVIDER one of "
                + ", ".join(p.upper() for p in OAUTH_PROVIDERS)
                + " and NAME one of "
                + ", ".join(f.upper() for f in _OAUTH_FIELDS)
            )
        data.setdefault("oauth", {}).setdefault(pname, {})[field] = env[var]
        origin[f"oauth.{pname}.{field}"] = var

    providers: list[dict[str, Any]] = data.setdefault("providers", [])
    by_key = {_env_key(str(p.get("name", ""))): p for p in providers}
    for var in sorted(env):
        if not var.startswith(PROVIDERS_ENV_PREFIX):
            continue
        rest = var[len(PROVIDERS_ENV_PREFIX) :]
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
        value = env[var]
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
    _check_finite(settings, origin, where)
    settings = _check_server(settings, env, origin, where)
    url = settings.alert_webhook_url
    if url is not None and not url.startswith(("http://", "https://")):
        var = origin.get("server.alert_webhook_url")
        raise ConfigError(
            f"server.alert_webhook_url: expected an http:// or https:// URL, got {url!r}"
            + (f" (from {var})" if var else "")
            + where
        )

    settings = _check_accounts(settings, env, origin, where)

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


def _check_server(settings: Settings, env: Mapping[str, str], origin: dict[str, str], where: str) -> Settings:
    """The data directory (``~`` expanded, the default filled in), the secret's length,
    the CORS origins."""

    def fail(field: str, message: str) -> ConfigError:
        var = origin.get(f"server.{field}")
        return ConfigError(f"server.{field}: {message}" + (f" (from {var})" if var else "") + where)

    changes: dict[str, Any] = {}
    if settings.data_dir:
        changes["data_dir"] = str(Path(settings.data_dir).expanduser())
    else:
        changes["data_dir"] = str(default_data_dir(env))
    if settings.secret is not None and len(_secret_bytes(settings.secret)) < MIN_SECRET_BYTES:
        raise fail("secret", f"must be at least {MIN_SECRET_BYTES} bytes long")
    if settings.body_idle_timeout > settings.body_timeout:
        raise fail("body_idle_timeout", f"must not exceed body_timeout ({settings.body_timeout:g} s)")
    if settings.store_pool_min > settings.store_pool_max:
        raise fail("store_pool_min", f"must not exceed store_pool_max ({settings.store_pool_max})")
    url = (settings.store_url or "").strip()
    if not url:
        changes["store_url"] = None
    elif _is_postgres(url):
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise fail("store_url", f"{redact_url(url)} is not a valid URL ({exc})") from None
        if not parts.hostname and "host=" not in parts.query:
            raise fail("store_url", f"{redact_url(url)} names no host: postgresql://user:password@host:5432/database")
        changes["store_url"] = url
    elif url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        changes["store_url"] = url
    else:
        raise fail(
            "store_url",
            f"{redact_url(url)!r} is not a store URL: give postgresql://user:password@host:5432/database, "
            "sqlite:///absolute/path.db, or nothing for the SQLite file in data_dir",
        )
    origins = []
    for value in settings.cors_allow_origins:
        origin_ = value.strip().lower()
        if origin_ != "*" and _ORIGIN.fullmatch(origin_) is None:
            raise fail(
                "cors_allow_origins",
                f"{value!r} is not an origin; give scheme://host[:port] without a path (https://app.example.com) or *",
            )
        origins.append(origin_)
    changes["cors_allow_origins"] = tuple(dict.fromkeys(origins))
    limiter_url = settings.limiter_url
    if limiter_url is not None:
        limiter_url = limiter_url.strip() or None  # an empty AGENTROUTER_LIMITER_URL: no Redis
        if limiter_url is not None and (
            not limiter_url.lower().startswith(LIMITER_URL_SCHEMES)
            or len(limiter_url) <= len(limiter_url.partition("://")[0]) + 3
        ):
            raise fail(
                "limiter_url",
                f"expected a redis://, rediss:// or unix:// URL, got {redact_url(limiter_url)!r}",
            )
        changes["limiter_url"] = limiter_url
    return msgspec.structs.replace(settings, **changes)


_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+")


def _check_accounts(settings: Settings, env: Mapping[str, str], origin: dict[str, str], where: str) -> Settings:
    """``public_url``, ``[accounts]`` (the registration domains), ``[smtp]`` (the
    password's variable, the sender) and ``[oauth.*]`` (each offered provider's secret,
    its endpoints)."""

    def fail(field: str, message: str) -> ConfigError:
        var = origin.get(field)
        return ConfigError(f"{field}: {message}" + (f" (from {var})" if var else "") + where)

    url = settings.public_url
    if url is not None and _PUBLIC_URL.fullmatch(url.lower()) is None:
        var = origin.get("server.public_url")
        raise ConfigError(
            f"server.public_url: expected http(s)://host[:port][/path] without a query, got {url!r}"
            + (f" (from {var})" if var else "")
            + where
        )

    acc = settings.accounts
    domains = []
    for d in acc.registration_domains:
        domain = d.strip().lower().removeprefix("@")
        if _DOMAIN.fullmatch(domain) is None:
            raise fail("accounts.registration_domains", f"{d!r} is not an email domain (example.com)")
        domains.append(domain)
    if acc.registration == "domains" and not domains:
        raise fail("accounts.registration", 'registration = "domains" needs registration_domains (["example.com"])')
    accounts = msgspec.structs.replace(acc, registration_domains=tuple(dict.fromkeys(domains)))

    smtp = settings.smtp
    smtp_changes: dict[str, Any] = {}
    if smtp.password is not None and smtp.password_env is not None:
        raise fail("smtp.password", "give password or password_env, not both")
    if smtp.password_env is not None:
        password = env.get(smtp.password_env)
        if not password:
            raise fail("smtp.password_env", f"environment variable {smtp.password_env} is not set")
        smtp_changes["password"] = password
    if smtp.host is not None and not smtp.host.strip():
        smtp_changes["host"] = None
    if smtp.password is not None and smtp.user is None:
        raise fail("smtp.user", "a password needs a user")
    if smtp.sender is not None:
        from email.headerregistry import Address
        from email.utils import parseaddr

        name, address = parseaddr(smtp.sender)
        if "@" not in address:
            raise fail(
                "smtp.sender", f"expected an address like 'AgentRouter <noreply@example.com>', got {smtp.sender!r}"
            )
        try:
            Address(display_name=name, addr_spec=address)
        except (ValueError, IndexError) as exc:
            raise fail("smtp.sender", f"{smtp.sender!r}: {exc}") from None
    if smtp.ca_file is not None and not Path(smtp.ca_file).is_file():
        raise fail("smtp.ca_file", f"no such file: {smtp.ca_file}")
    if smtp_changes:
        smtp = msgspec.structs.replace(smtp, **smtp_changes)

    oauth_changes: dict[str, Any] = {}
    for name in OAUTH_PROVIDERS:
        p: OAuthProviderSettings = getattr(settings.oauth, name)
        label = f"oauth.{name}"
        changes: dict[str, Any] = {}
        if p.client_secret is not None and p.client_secret_env is not None:
            raise fail(f"{label}.client_secret", "give client_secret or client_secret_env, not both")
        if p.client_secret_env is not None:
            secret = env.get(p.client_secret_env)
            if not secret:
                raise fail(f"{label}.client_secret_env", f"environment variable {p.client_secret_env} is not set")
            changes["client_secret"] = secret
        if p.client_id is not None and not p.client_id.strip():
            changes["client_id"] = None
        elif p.client_id and not (p.client_secret or changes.get("client_secret")):
            raise fail(f"{label}.client_secret", "required with client_id (or client_secret_env)")
        for field, default in OAUTH_DEFAULTS[name].items():
            value = getattr(p, field) or default
            if not value.startswith(("http://", "https://")):
                raise fail(f"{label}.{field}", f"expected an http:// or https:// URL, got {value!r}")
            changes[field] = value
        for field in ("authorize_url", "access_token_url", "api_base_url", "server_metadata_url"):
            if field not in OAUTH_DEFAULTS[name] and getattr(p, field) is not None:
                raise fail(f"{label}.{field}", f"not a setting of {name} (it takes {', '.join(OAUTH_DEFAULTS[name])})")
        oauth_changes[name] = msgspec.structs.replace(p, **changes)
    oauth = msgspec.structs.replace(settings.oauth, **oauth_changes)
    return msgspec.structs.replace(settings, accounts=accounts, smtp=smtp, oauth=oauth)


_PUBLIC_URL = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?(/[^?#\s]*)?")
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?")


def _check_finite(settings: Settings, origin: dict[str, str], where: str) -> None:
    """Infinity and NaN pass msgspec's bounds; no duration or threshold here means them."""
    structs: list[tuple[str, Any]] = [
        ("server", settings),
        ("monitor", settings.monitor),
        ("accounts", settings.accounts),
        ("smtp", settings.smtp),
    ]
    structs += [(f"providers[{i}] ({p.name!r})", p) for i, p in enumerate(settings.providers)]
    for label, struct in structs:
        for field in struct.__struct_fields__:
            value = getattr(struct, field)
            if isinstance(value, float) and not math.isfinite(value):
                var = origin.get(f"{label}.{field}") or origin.get(f"providers.{_env_key(label)}.{field}")
                raise ConfigError(
                    f"{label}.{field}: expected a finite number, got {value!r}"
                    + (f" (from {var})" if var else "")
                    + where
                )


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
        if p.ca_file is not None and not Path(p.ca_file).is_file():
            raise ConfigError(f"{label}.ca_file: no such file: {p.ca_file}")
    for j, m in enumerate(p.models):
        if not m or m != m.strip():
            raise ConfigError(f"{label}.models[{j}]: empty or padded model name {m!r}")
    for field in ("organization", "project"):
        value = getattr(p, field)
        if value is None:
            continue
        if p.type != "openai":
            raise ConfigError(f"{label}.{field}: only a provider of type 'openai' takes it (OpenAI-{field.title()})")
        # A header value, sent as given: visible ASCII, no spaces (OpenAI's ids are org-…, proj_…).
        if not value or not all("!" <= c <= "~" for c in value):
            raise ConfigError(f"{label}.{field}: expected an id of visible ASCII characters, got {value!r}")
    return msgspec.structs.replace(p, **changes) if changes else p


def _explain(message: str, providers: list[dict[str, Any]], origin: dict[str, str]) -> str:
    """Turn msgspec's ``... - at `$.providers[0].type``` into ``providers[0].type: ...``."""
    text, sep, at = message.rpartition(" - at `")
    if not sep:
        # "Object contains unknown field `x`" carries no path at the top level.
        return f"server: {message}"
    path = at.rstrip("`").removeprefix("$").lstrip(".")
    if path.startswith("providers["):
        index_s, _, rest = path[len("providers[") :].partition("]")
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
    if path.split(".", 1)[0] in ("monitor", "accounts", "smtp", "oauth"):
        var = origin.get(path.split("[", 1)[0])
        return f"{path}: {text}" + (f" (from {var})" if var else "")
    field = path.split(".", 1)[0].split("[", 1)[0]
    var = origin.get(f"server.{field}")
    return f"server.{path}: {text}" + (f" (from {var})" if var else "")
