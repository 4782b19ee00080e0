"""The operations of the management API, version 1: one table drives both the
router (``app.py``) and the OpenAPI document (``openapi.py``).

Keys (``/api/v1/keys``) go through the ``KeyService`` — the same validation and the
same effect on running gateways as the CLI. Usage and alerts come from
``store.analytics``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from agentrouter.actor import INSTANCE, Actor
from agentrouter.api.errors import ApiError, not_found, validation_error
from agentrouter.api.params import decode_cursor, encode_cursor, label_matches, parse_time
from agentrouter.api.schemas import (
    MAX_METADATA_BYTES,
    Alert,
    AlertList,
    AlertsQuery,
    CreatedKey,
    Key,
    KeyCreate,
    KeyList,
    KeyQuery,
    KeyRotate,
    KeysQuery,
    KeyUpdate,
    KeyUsage,
    OverallUsageQuery,
    RateLimit,
    UsageQuery,
    UsageReport,
)
from agentrouter.config import Settings
from agentrouter.core import Core
from agentrouter.keys import KeyInputError, KeyNotFound, check_metadata_depth
from agentrouter.store import KeyRow
from agentrouter.store.analytics import UsageQueryError
from agentrouter.store.models import AlertRow

SHOWN_ONCE = "This key will not be shown again. Copy it now and keep it somewhere safe."
DEFAULT_RANGE = 86400.0


class Request:
    """What a handler gets: path parameters, decoded query and body, the caller
    (``caller``: an ``agentrouter.api.caller.Caller``) and the request's cookies."""

    __slots__ = ("body", "caller", "cookies", "method", "params", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        query: Any,
        body: Any,
        caller: Any = None,
        cookies: dict[str, str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.params = params
        self.query = query
        self.body = body
        self.caller = caller
        self.cookies = cookies or {}

    @property
    def caller_id(self) -> str | None:
        return getattr(self.caller, "caller_id", None)


class Reply:
    """A JSON answer (``body`` encoded), or with ``redirect`` a 302 to that URL."""

    __slots__ = ("body", "headers", "redirect", "status")

    def __init__(
        self,
        body: Any,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        redirect: str | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers or []
        self.redirect = redirect


class Context:
    """What handlers share: the opened core, its store, the server's
    settings, how cookies are made (``api.web``) and the OAuth providers (``api.oauth``)."""

    def __init__(self, core: Core, settings: Settings | None = None) -> None:
        from agentrouter.api.oauth import flows_from_settings
        from agentrouter.api.web import CookiePolicy

        self.core = core
        self.settings = settings if settings is not None else Settings()
        self.store = core.store
        self.cookies = CookiePolicy(https=self.settings.https)
        self.oauth = flows_from_settings(self.settings, core.digester, clock=core.now)

    def now(self) -> float:
        return self.core.now()


Handler = Callable[[Context, Request], Awaitable[Reply]]
Auth = Literal["manage", "user", "public"]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    description: str
    handler: Handler
    response: Any
    status: int = 200
    body: Any = None
    query: Any = None
    errors: tuple[int, ...] = ()
    auth: Auth = "manage"
    """Who may call it: ``manage`` a manage key or a session; ``user`` a signed-in person
    (a session, or a manage key owned by one); ``public`` anyone (a session is used
    when there is one)."""
    redirect: bool = False
    """Answers a 302 to a browser (the OAuth routes), not JSON."""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))

    def parse_query(self, raw: dict[str, list[str]]) -> Any:
        if self.query is None:
            return None
        fields = set(self.query.__struct_fields__)
        data: dict[str, Any] = {}
        for name, values in raw.items():
            if name not in fields:
                continue  # unknown parameters are ignored, as HTTP caches and proxies add their own
            if _is_list_field(self.query, name):
                data[name] = values
            elif len(values) > 1:
                raise ApiError(422, f"{name}: given more than once", field=name)
            else:
                data[name] = values[0]
        try:
            query = msgspec.convert(data, self.query, strict=False)
        except msgspec.ValidationError as exc:
            raise validation_error(exc) from None
        for name in data:  # lax conversion reads "null" as None; a parameter is absent instead
            if getattr(query, name) is None:
                raise ApiError(422, f"{name}: not a valid value; leave the parameter out instead", field=name)
        return query

    def parse_body(self, raw: bytes) -> Any:
        if self.body is None:
            return None
        if not raw:  # no body at all counts as {}; whitespace is malformed JSON
            raw = b"{}"
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"The body is not valid JSON: {exc}") from None
        except RecursionError:  # msgspec's answer to arrays or objects nested ~1000 deep
            raise ApiError(400, "The body is not valid JSON: nested too deeply") from None
        try:
            return msgspec.convert(_integral(data, msgspec.inspect.type_info(self.body)), self.body)
        except msgspec.ValidationError as exc:
            raise validation_error(exc) from None
        except RecursionError:
            raise ApiError(422, "The body is nested too deeply") from None


def _integral(value: Any, info: msgspec.inspect.Type) -> Any:
    """JSON Schema counts 428.0 as an integer: turn integral floats into ints where the
    body's type wants an int (``rate_limit.requests``), and leave everything else —
    metadata included — exactly as sent."""
    if isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        types = [t.type if isinstance(t, msgspec.inspect.Metadata) else t for t in info.types]
        structs = [t for t in types if isinstance(t, msgspec.inspect.StructType)]
        ints = any(isinstance(t, msgspec.inspect.IntType) for t in types)
        floats = any(isinstance(t, msgspec.inspect.FloatType) for t in types)
        if isinstance(value, dict) and len(structs) == 1:
            return _integral(value, structs[0])
        if ints and not floats and isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if isinstance(info, msgspec.inspect.IntType):
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        return {k: _integral(v, fields[k]) if k in fields else v for k, v in value.items()}
    return value


def _is_list_field(struct: Any, name: str) -> bool:
    for f in msgspec.structs.fields(struct):
        if f.name == name:
            return getattr(f.type, "__origin__", None) is list or "list[" in str(f.type)
    return False


# -- conversions ------------------------------------------------------------------


def key_out(row: KeyRow) -> Key:
    u = row.usage
    return Key(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=row.scope,
        state=row.state,
        created_at=row.created_at,
        last_used_at=u.last_used_at,
        expires_at=row.expires_at,
        rate_limit=None if row.requests is None else RateLimit(requests=row.requests, interval=row.interval or 60.0),
        metadata=row.metadata,
        owner=row.owner,
        rotated_to=row.rotated_to,
        deleted_at=row.deleted_at,
        usage=KeyUsage(
            requests=u.requests,
            successes=u.successes,
            failures_4xx=u.failures_4xx,
            failures_5xx=u.failures_5xx,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            latency_ms_avg=(u.latency_ms_total / u.requests) if u.requests else None,
            last_used_at=u.last_used_at,
            last_client_ip=u.last_client_ip,
        ),
    )


def created_out(raw: str, row: KeyRow) -> CreatedKey:
    return CreatedKey(**msgspec.structs.asdict(key_out(row)), key=raw, warning=SHOWN_ONCE)


def alert_out(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        key_id=row.key_id,
        kind=row.kind,
        subject=row.subject,
        evidence=row.evidence,
        created_at=row.created_at,
        acknowledged_at=row.acknowledged_at,
    )


_INPUT_FIELDS = {
    "requests": "rate_limit.requests",
    "interval": "rate_limit.interval",
    "an": "rate_limit",
    "metadata": "metadata",
    "name": "name",
    "scope": "scope",
    "expires_in": "expires_in",
    "expires_at": "expires_in",
    "grace": "grace_seconds",
}


def _input_error(exc: KeyInputError) -> ApiError:
    message = str(exc)
    if message.startswith("owner: no user"):  # an unknown id, like any other: 404
        return ApiError(404, message, field="owner")
    first = message.split(" ", 1)[0]
    return ApiError(422, message, field=_INPUT_FIELDS.get(first))


def _actor(req: Request) -> Actor:
    """The actor of a key route (the router made sure there is a credential)."""
    actor = getattr(req.caller, "actor", None)
    return INSTANCE if actor is None else actor


async def _key_row(ctx: Context, key_id: str, actor: Actor, *, include_deleted: bool = False) -> KeyRow:
    """The key when ``actor`` may see it; 404 alike for a missing key and someone else's."""
    try:
        row = await ctx.core.keys.get(key_id, actor=actor)
    except KeyNotFound:
        raise not_found("key", key_id) from None
    if row.state != "active" and not include_deleted:
        raise ApiError(404, f"no key with id {key_id!r} (it was deleted)")
    return row


def _check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is None:
        return
    try:
        check_metadata_depth(metadata)  # before encoding it: no recursion limit to reach
    except KeyInputError as exc:
        raise _input_error(exc) from None
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise ApiError(422, f"metadata: at most {MAX_METADATA_BYTES} bytes of JSON", field="metadata")


# -- keys ----------------------------------------------------------------------


async def list_keys(ctx: Context, req: Request) -> Reply:
    q: KeysQuery = req.query
    actor = _actor(req)
    owner = actor.user_id if q.owner == "me" else q.owner
    if q.owner == "me" and owner is None:
        raise ApiError(422, "owner: 'me' needs a caller that is a person (a session or an owned key)", field="owner")
    rows = await ctx.core.keys.list(include_deleted=q.include_deleted, actor=actor, owner=owner)
    if q.label:
        rows = [r for r in rows if label_matches(r.metadata, q.label)]
    rows.sort(key=lambda r: (r.created_at, r.id))
    if q.cursor is not None:
        after = decode_cursor(q.cursor)
        rows = [r for r in rows if (r.created_at, r.id) > after]
    page = rows[: q.limit]
    has_more = len(rows) > q.limit
    return Reply(
        KeyList(
            data=[key_out(r) for r in page],
            has_more=has_more,
            next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if has_more and page else None,
        )
    )


async def create_key(ctx: Context, req: Request) -> Reply:
    b: KeyCreate = req.body
    _check_metadata(b.metadata)
    try:
        created = await ctx.core.keys.create(
            name=b.name,
            requests=None if b.rate_limit is None else b.rate_limit.requests,
            interval=None if b.rate_limit is None else b.rate_limit.interval,
            metadata=b.metadata,
            expires_in=b.expires_in,
            scope=b.scope,
            owner=b.owner,
            actor=_actor(req),
        )
    except KeyInputError as exc:
        raise _input_error(exc) from None
    return Reply(created_out(created.key, created.row), 201, [(b"location", f"/api/v1/keys/{created.row.id}".encode())])


async def get_key(ctx: Context, req: Request) -> Reply:
    q: KeyQuery = req.query
    return Reply(key_out(await _key_row(ctx, req.params["key_id"], _actor(req), include_deleted=q.include_deleted)))


async def update_key(ctx: Context, req: Request) -> Reply:
    b: KeyUpdate = req.body
    key_id = req.params["key_id"]
    changes: dict[str, Any] = {}
    if b.name is not msgspec.UNSET:
        changes["name"] = b.name
    if b.rate_limit is not msgspec.UNSET:
        if b.rate_limit is None:
            changes["requests"] = None
        else:
            changes["requests"] = b.rate_limit.requests
            changes["interval"] = b.rate_limit.interval
    if b.metadata is not msgspec.UNSET:
        _check_metadata(b.metadata)
        changes["metadata"] = b.metadata
    if b.expires_in is not msgspec.UNSET:
        changes["expires_at"] = None if b.expires_in is None else ctx.now() + b.expires_in
    actor = _actor(req)
    await _key_row(ctx, key_id, actor)  # 404 before anything else
    if not changes:
        return Reply(key_out(await _key_row(ctx, key_id, actor)))
    try:
        row = await ctx.core.keys.update(key_id, **changes, actor=actor)
    except KeyInputError as exc:
        raise _input_error(exc) from None
    except KeyNotFound:
        raise not_found("key", key_id) from None
    return Reply(key_out(row))


async def delete_key(ctx: Context, req: Request) -> Reply:
    key_id = req.params["key_id"]
    try:
        row = await ctx.core.keys.delete(key_id, actor=_actor(req))
    except KeyNotFound:
        raise not_found("key", key_id) from None
    return Reply(key_out(row))


async def rotate_key(ctx: Context, req: Request) -> Reply:
    b: KeyRotate = req.body
    key_id = req.params["key_id"]
    actor = _actor(req)
    await _key_row(ctx, key_id, actor)
    try:
        created = await ctx.core.keys.rotate(key_id, grace=b.grace_seconds, actor=actor)
    except KeyInputError as exc:
        raise _input_error(exc) from None
    except KeyNotFound:
        raise not_found("key", key_id) from None
    return Reply(created_out(created.key, created.row), 201, [(b"location", f"/api/v1/keys/{created.row.id}".encode())])


# -- usage -----------------------------------------------------------------------


async def _usage(ctx: Context, q: UsageQuery, key_id: str | None, owner: str | None = None) -> Reply:
    now = ctx.now()
    until = now if q.until is None else parse_time(q.until, now=now, field="until")
    since = until - DEFAULT_RANGE if q.since is None else parse_time(q.since, now=now, field="since")
    try:
        report: UsageReport = await ctx.store.usage(since=since, until=until, bucket=q.by, key_id=key_id, owner=owner)
    except UsageQueryError as exc:
        raise ApiError(422, f"{exc.field}: {exc}", field=exc.field) from None
    return Reply(report)


async def key_usage(ctx: Context, req: Request) -> Reply:
    key_id = req.params["key_id"]
    await _key_row(ctx, key_id, _actor(req), include_deleted=True)
    return await _usage(ctx, req.query, key_id)


async def overall_usage(ctx: Context, req: Request) -> Reply:
    q: OverallUsageQuery = req.query
    actor = _actor(req)
    if q.key_id is not None:
        await _key_row(ctx, q.key_id, actor, include_deleted=True)
    # A member's "all keys" are their own keys.
    return await _usage(ctx, q, q.key_id, owner=None if actor.is_admin else actor.user_id)


# -- alerts ----------------------------------------------------------------------


async def list_alerts(ctx: Context, req: Request) -> Reply:
    q: AlertsQuery = req.query
    before = decode_cursor(q.cursor) if q.cursor is not None else None
    acknowledged = {"open": False, "acknowledged": True, "all": None}[q.status]
    actor = _actor(req)  # a member's filter is their own keys: another's key_id lists nothing
    rows = await ctx.store.list_alerts(
        kind=q.kind,
        key_id=q.key_id,
        acknowledged=acknowledged,
        before=before,
        limit=q.limit + 1,
        owner=None if actor.is_admin else actor.user_id,
    )
    page = rows[: q.limit]
    has_more = len(rows) > q.limit
    return Reply(
        AlertList(
            data=[alert_out(r) for r in page],
            has_more=has_more,
            next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if has_more and page else None,
        )
    )


async def get_alert(ctx: Context, req: Request) -> Reply:
    return Reply(alert_out(await _alert_row(ctx, req, req.params["alert_id"])))


async def _alert_row(ctx: Context, req: Request, alert_id: str) -> AlertRow:
    """The alert when the caller may see its key (404 alike otherwise)."""
    row = await ctx.store.get_alert(alert_id)
    if row is None:
        raise not_found("alert", alert_id)
    try:
        await ctx.core.keys.get(row.key_id, actor=_actor(req))
    except KeyNotFound:
        raise not_found("alert", alert_id) from None
    return row


async def acknowledge_alert(ctx: Context, req: Request) -> Reply:
    alert_id = req.params["alert_id"]
    await _alert_row(ctx, req, alert_id)
    row = await ctx.store.acknowledge_alert(alert_id, now=ctx.now())
    if row is None:
        raise not_found("alert", alert_id)
    return Reply(alert_out(row))


# -- the table -------------------------------------------------------------------

_READ = (401, 403, 429)
_KEY = "/api/v1/keys/{key_id}"
_ALERT = "/api/v1/alerts/{alert_id}"

KEY_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/v1/keys",
        "listKeys",
        "keys",
        "List keys",
        "Keys oldest first with their prefix, creation and last-used times, rate limit and usage totals. "
        "Paginated: pass `next_cursor` back as `cursor` until `has_more` is false. Filter by metadata "
        "labels with `label=environment=production` (repeatable; all must match).",
        list_keys,
        KeyList,
        query=KeysQuery,
        errors=(*_READ, 422),
    ),
    Operation(
        "POST",
        "/api/v1/keys",
        "createKey",
        "keys",
        "Create a key",
        "Returns the new key in `key` — the only time it is ever shown. The key works on its next request "
        "on every gateway worker. Fields a caller cannot set (id, prefix, digest, created_at, usage, state…) "
        "are refused with 422.",
        create_key,
        CreatedKey,
        status=201,
        body=KeyCreate,
        errors=(*_READ, 400, 404, 409, 413, 415, 422),
    ),
    Operation(
        "GET",
        _KEY,
        "getKey",
        "keys",
        "Get a key",
        "A deleted key is 404 unless `include_deleted=true`.",
        get_key,
        Key,
        query=KeyQuery,
        errors=(*_READ, 404, 422),
    ),
    Operation(
        "PATCH",
        _KEY,
        "updateKey",
        "keys",
        "Update a key",
        "Change the name, rate limit, metadata (replaced whole) or expiry. Only the fields present change; "
        "an empty object changes nothing. Running gateways apply the change on their next request.",
        update_key,
        Key,
        body=KeyUpdate,
        errors=(*_READ, 400, 404, 413, 415, 422),
    ),
    Operation(
        "DELETE",
        _KEY,
        "deleteKey",
        "keys",
        "Delete a key",
        "Requests with the key fail with 401 from the next one on, on every worker. Returns the deleted key.",
        delete_key,
        Key,
        errors=(*_READ, 404),
    ),
    Operation(
        "POST",
        _KEY + "/rotate",
        "rotateKey",
        "keys",
        "Rotate a key",
        "Creates a new key with the same name, limit, metadata, scope and expiry, returned once in `key`. "
        "The old key keeps working for `grace_seconds`, then gets 401.",
        rotate_key,
        CreatedKey,
        status=201,
        body=KeyRotate,
        errors=(*_READ, 400, 404, 409, 413, 415, 422),
    ),
    Operation(
        "GET",
        _KEY + "/usage",
        "getKeyUsage",
        "usage",
        "Usage of one key",
        "Totals, a time series in minute, hour or day buckets, and the per-model breakdown over a range, "
        "from the request log: requests, successes, failures by status class, input/output tokens, latency "
        "p50/p95 and distinct client IPs. Deleted keys keep their history.",
        key_usage,
        UsageReport,
        query=UsageQuery,
        errors=(*_READ, 404, 422),
    ),
    Operation(
        "GET",
        "/api/v1/usage",
        "getUsage",
        "usage",
        "Usage of all keys",
        "As for one key, over every key together (or one, with `key_id`).",
        overall_usage,
        UsageReport,
        query=OverallUsageQuery,
        errors=(*_READ, 404, 422),
    ),
    Operation(
        "GET",
        "/api/v1/alerts",
        "listAlerts",
        "alerts",
        "List alerts",
        "Findings of the unusual-usage monitor, newest first: `volume_spike`, `unusual_hour`, "
        "`failure_rate`, `new_ip`. Open ones by default (`status=all` for every alert).",
        list_alerts,
        AlertList,
        query=AlertsQuery,
        errors=(*_READ, 422),
    ),
    Operation(
        "GET",
        _ALERT,
        "getAlert",
        "alerts",
        "Get an alert",
        "One alert with its evidence.",
        get_alert,
        Alert,
        errors=(*_READ, 404),
    ),
    Operation(
        "POST",
        _ALERT + "/ack",
        "acknowledgeAlert",
        "alerts",
        "Acknowledge an alert",
        "Marks the alert acknowledged (the first acknowledgement's time is kept; acknowledging again changes nothing).",
        acknowledge_alert,
        Alert,
        errors=(*_READ, 404),
    ),
)
