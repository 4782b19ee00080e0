"""Request and response bodies of the management API, as msgspec structs.

The OpenAPI document is generated from these (``msgspec.json.schema_components``), so
what is validated and what is documented cannot drift apart. Request bodies forbid
unknown fields: a field a caller may not set (``id``, ``digest``, ``prefix``,
``created_at``, ``usage``, ``last_used_at``, ``state``, …) is refused with 422 naming
it, never silently ignored.

Times are Unix seconds (numbers), as in the CLI's ``--json`` output.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from agentrouter.keys import MAX_INTERVAL, MAX_NAME, MAX_REQUESTS
from agentrouter.store.analytics import ModelUsage, UsageBucket, UsageReport, UsageStats
from agentrouter.store.models import AlertKind

__all__ = [
    "Alert",
    "AlertList",
    "AlertsQuery",
    "CreatedKey",
    "Key",
    "KeyCreate",
    "KeyList",
    "KeyQuery",
    "KeyRotate",
    "KeyUpdate",
    "KeyUsage",
    "KeysQuery",
    "ModelUsage",
    "RateLimit",
    "UsageBucket",
    "UsageQuery",
    "UsageReport",
    "UsageStats",
]

MAX_METADATA_BYTES = 16 * 1024
MIN_INTERVAL = 0.001
TEN_YEARS = MAX_INTERVAL

Requests = Annotated[int, Meta(ge=1, le=MAX_REQUESTS, description="Requests allowed per interval.")]
Interval = Annotated[
    float,
    Meta(ge=MIN_INTERVAL, le=MAX_INTERVAL, description="The interval in seconds (refilled continuously)."),
]
Name = Annotated[str, Meta(max_length=MAX_NAME, description="A friendly name; blank clears it.")]
Metadata = Annotated[
    dict[str, Any],
    Meta(description='A JSON object of labels, e.g. {"environment": "production", "team": "engineering"}.'),
]
Duration = Annotated[float, Meta(gt=0, le=TEN_YEARS, description="Seconds from now.")]
Scope = Literal["inference", "manage"]
State = Literal["active", "deleted"]

# -- keys ---------------------------------------------------------------------


class RateLimit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """R requests per I seconds (a token bucket of capacity R refilled at R/I per second)."""

    requests: Requests
    interval: Interval = 60.0


class KeyUsage(msgspec.Struct, kw_only=True):
    """All-time usage totals of a key (as the gateway counted them)."""

    requests: int
    successes: Annotated[int, Meta(description="Answers with a status below 400.")]
    failures_4xx: Annotated[int, Meta(description="Answers with a 4xx status (429 included).")]
    failures_5xx: Annotated[int, Meta(description="Answers with a 5xx status.")]
    input_tokens: int
    output_tokens: int
    latency_ms_avg: Annotated[float | None, Meta(description="Mean latency in milliseconds; null before any use.")]
    last_used_at: float | None
    last_client_ip: str | None


class Key(msgspec.Struct, kw_only=True):
    """An API key as listed: never the key itself, only its display prefix."""

    id: str
    name: str | None
    prefix: Annotated[str, Meta(description="The first 12 characters and an ellipsis, e.g. sk-ar-7Gh2kQ….")]
    scope: Annotated[Scope, Meta(description="inference: the /v1 API; manage: this API.")]
    state: State
    created_at: Annotated[float, Meta(description="Unix seconds.")]
    last_used_at: Annotated[float | None, Meta(description="Unix seconds; null: never used.")]
    expires_at: Annotated[float | None, Meta(description="Unix seconds; null: never expires.")]
    rate_limit: Annotated[RateLimit | None, Meta(description="null: no limit.")]
    metadata: Annotated[dict[str, Any], Meta(description="Labels: a JSON object.")]
    owner: Annotated[str | None, Meta(description="The user id of its owner; null: an instance key (admins).")]
    rotated_to: Annotated[str | None, Meta(description="Set once the key was rotated: its successor's id.")]
    deleted_at: float | None
    usage: KeyUsage


class CreatedKey(Key, kw_only=True):
    """A new key. ``key`` is shown this once and never again."""

    key: Annotated[str, Meta(description="The key itself (sk-ar-…, 44 characters): shown this once only.")]
    warning: str


class KeyList(msgspec.Struct, kw_only=True):
    data: list[Key]
    has_more: bool
    next_cursor: Annotated[
        str | None, Meta(description="Pass as `cursor` to get the next page; null on the last page.")
    ]


class KeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new key. Every field is optional; fields not listed here are refused."""

    name: Name | None = None
    rate_limit: Annotated[RateLimit | None, Meta(description="null or absent: no limit.")] = None
    metadata: Metadata | None = None
    expires_in: Annotated[
        Duration | None,
        Meta(description="The key stops working this many seconds after creation; null or absent: never."),
    ] = None
    scope: Annotated[Scope, Meta(description="inference (default) for /v1 calls; manage for this API.")] = "inference"
    owner: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=64,
                description="Admins: the user id the key is for. A member's keys are always their own; "
                "a manage key without an owner makes instance keys unless this names a user.",
            ),
        ]
        | None
    ) = None


class KeyUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields present change. ``metadata`` replaces the whole object."""

    name: Name | UnsetType | None = UNSET
    rate_limit: Annotated[RateLimit | None, Meta(description="null removes the limit.")] | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    expires_in: Annotated[Duration | None, Meta(description="Seconds from now; null: never expire.")] | UnsetType = (
        UNSET
    )


class KeyRotate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    grace_seconds: Annotated[
        float,
        Meta(ge=0, le=TEN_YEARS, description="How long the old key keeps working (0, the default: it stops at once)."),
    ] = 0.0


# -- alerts ---------------------------------------------------------------------


class Alert(msgspec.Struct, kw_only=True):
    """A finding of the unusual-usage monitor."""

    id: str
    key_id: str
    kind: Annotated[
        AlertKind,
        Meta(
            description=(
                "volume_spike: an hour's requests far above the key's usual busiest hour; unusual_hour: use in an "
                "hour of the day when the key is normally idle; failure_rate: most requests of an hour failed; "
                "new_ip: a client network never seen for the key."
            )
        ),
    ]
    subject: Annotated[
        str, Meta(description="What the condition is about: the hour (Unix seconds) or, for new_ip, the network.")
    ]
    evidence: Annotated[
        dict[str, Any],
        Meta(
            description=(
                "The figures the detector saw. volume_spike: requests, baseline_typical_peak_hour, threshold, factor, "
                "window_start/window_end. unusual_hour: hour_of_day_utc, requests, baseline_active_days, "
                "days_used_near_this_hour, usual_hours_utc. failure_rate: requests, failures, failures_4xx, "
                "failures_5xx, rate, baseline_rate, threshold. new_ip: ip, network, first_seen, requests, "
                "known_networks, known_sample."
            )
        ),
    ]
    created_at: float
    acknowledged_at: Annotated[float | None, Meta(description="null: open.")]


class AlertList(msgspec.Struct, kw_only=True):
    data: list[Alert]
    has_more: bool
    next_cursor: str | None


# -- query parameters (validated with msgspec, documented from these) ----------

CURSOR_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,9})?:[A-Za-z0-9_-]{1,64}$"
Cursor = Annotated[
    str,
    Meta(pattern=CURSOR_PATTERN, description="The next_cursor of the previous page."),
]
Limit = Annotated[int, Meta(ge=1, le=200, description="Page size (1–200).")]

TIME_PATTERN = (
    r"^(-?[0-9]{1,12}(\.[0-9]{1,6})?"  # Unix seconds
    r"|([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h|d|w)){1,4}"  # a duration before now: 30m, 24h, 1h30m
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}"  # a UTC date
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
    r")$"
)
TimeParam = Annotated[
    str,
    Meta(
        pattern=TIME_PATTERN,
        description=(
            "A Unix time in seconds (1700000000), an RFC 3339 date-time (2024-05-01T00:00:00Z), "
            "a UTC date (2024-05-01), or a duration before now (30m, 24h, 7d, 1h30m)."
        ),
    ),
]


class KeysQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    limit: Limit = 50
    cursor: Cursor | None = None
    label: Annotated[
        list[str],
        Meta(
            description=(
                "Metadata label filter, repeatable (all must match): ``environment=production`` "
                "matches keys whose metadata has that value; ``environment`` alone matches keys that "
                "have the label at all."
            )
        ),
    ] = []
    include_deleted: Annotated[bool, Meta(description="Also list deleted keys.")] = False
    owner: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=64,
                description="Admins: only the keys of this user id (`me`: your own). Members see their own only.",
            ),
        ]
        | None
    ) = None


class KeyQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    include_deleted: Annotated[bool, Meta(description="Also find a deleted key.")] = False


class UsageQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    since: TimeParam | None = None
    """Start of the range; default 24 hours before ``until``."""
    until: TimeParam | None = None
    """End of the range (exclusive); default now."""
    by: Annotated[
        Literal["minute", "hour", "day"],
        Meta(description="Bucket size of the series (UTC-aligned)."),
    ] = "hour"


class OverallUsageQuery(UsageQuery, kw_only=True, forbid_unknown_fields=False):
    key_id: Annotated[str, Meta(min_length=1, max_length=64, description="Only this key.")] | None = None


class AlertsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    status: Annotated[
        Literal["open", "acknowledged", "all"],
        Meta(description="open (default): not acknowledged yet."),
    ] = "open"
    kind: AlertKind | None = None
    key_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


_ = (UsageBucket, ModelUsage, UsageStats, UsageReport)  # re-exported response structs
