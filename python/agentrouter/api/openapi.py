"""The OpenAPI 3.1 document of the management API, generated from the operation
table (``routes.OPERATIONS``) and the msgspec structs it names — the same structs
that validate requests, so the document and the behaviour cannot drift apart."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import msgspec

from agentrouter.api.errors import ErrorBody
from agentrouter.api.routes import Operation
from agentrouter.api.table import OPERATIONS

API_VERSION = "1.0.0"
REF = "#/components/schemas/{name}"

DESCRIPTION = """\
Manage AgentRouter API keys, read usage statistics and unusual-usage alerts.

**Versioning.** Every operation lives under `/api/v1`. Within v1, changes are additive
only (new operations, new optional request fields, new response fields); anything
else gets a new prefix (`/api/v2`). This document is served at `/api/openapi.json`,
a readable reference at `/api/docs`.

**Authentication.** A management key, or a session cookie from signing in (see
below). A management key: an `sk-ar-` key with scope `manage`
(`agentrouter keys create --scope manage`), sent as `Authorization: Bearer sk-ar-…`
or `x-api-key: sk-ar-…` (both only with the same key: a header given twice, or two
different keys, is refused as ambiguous). A missing, malformed, unknown, deleted or
expired key gets 401; an inference key gets 403. The management key's own rate limit
applies, with `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`
(Unix seconds) on every answer and `Retry-After` and `retry-after-ms` on a 429.
A manage key without an owner acts as the operator (every key, every user); one
owned by a person (`--owner EMAIL`) acts as that person.

**Sessions.** `POST /api/v1/auth/signin` (or GitHub / Google through
`/api/v1/auth/oauth/{provider}/start`) sets the session cookie `agentrouter_session`
(HttpOnly, SameSite=Lax, 30 days; `__Host-` prefixed and Secure over https) and
returns a `csrf_token`. With the cookie, every request that changes something must
send `X-CSRF-Token: <csrf_token>` and come from this site (`Origin`), or it gets 403
(`code: csrf_failed`); an ended or expired session gets 401 (`code: session_ended`).
The same routes, bodies and errors serve both credentials: a member sees and changes
only their own keys, usage, alerts, sessions and audit events (anyone else's are
404, never 403); an admin sees everyone's (`owner` filter on the key list).

**Errors.** One shape: `{"error": {"type", "message", "field"}}`; `type` is
`invalid_request`, `authentication_error`, `permission_error`, `not_found`,
`method_not_allowed`, `conflict`, `rate_limit_error`, `api_error` or
`service_unavailable` (503 with `Retry-After`: the database — PostgreSQL — cannot be
reached; nothing was changed, or retry to be sure); `field` names the
body field or query parameter at fault; `code`, on the account routes, a stable
reason (`invalid_credentials`, `too_many_attempts`, `email_not_verified`, …). Unknown id → 404; malformed JSON → 400; a
body that does not validate → 422 naming the field, including fields a caller may
not set (`id`, `prefix`, `digest`, `created_at`, `usage`, `state`, …), which are
refused, never ignored. A refused request changes nothing.

**Times** are Unix seconds. **Pagination**: lists return `data`, `has_more` and
`next_cursor`; pass `next_cursor` as `cursor` for the next page (`limit` 1–200,
default 50).
"""

_RATE_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed per interval (keys with a limit).",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {"description": "Requests left right now.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {
        "description": "Unix time (seconds) when the bucket is full again.",
        "schema": {"type": "integer"},
    },
}
_ERROR_TEXT = {
    400: "Malformed JSON.",
    401: "Missing, malformed, unknown, deleted or expired key; no session, or one that ended.",
    403: "Not allowed: an inference key, a failed CSRF or Origin check, or an admin-only operation.",
    404: "No such object, or not one of yours.",
    302: "Redirect.",
    502: "The OAuth provider could not be reached or answered nonsense.",
    503: "Busy or starting; retry shortly.",
    409: "The store refused the change (for example: no free limiter slot).",
    413: "The body is too large.",
    415: "The body is not JSON (send Content-Type: application/json).",
    422: "A field or parameter is invalid; `error.field` names it.",
    429: "Over the management key's rate limit; see Retry-After.",
}


@cache
def openapi_document() -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for op in OPERATIONS:
        if op.response is not None:
            types.append(op.response)
        if op.body is not None:
            types.append(op.body)
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AgentRouter management API",
            "version": API_VERSION,
            "description": DESCRIPTION,
        },
        "tags": [
            {"name": "auth", "description": "Register, verify, sign in (password, GitHub, Google), sign out, reset."},
            {"name": "account", "description": "Your account: profile, password, devices, linked sign-ins, 2FA."},
            {"name": "users", "description": "Admins: users and invitations."},
            {"name": "audit", "description": "The audit log of security events."},
            {"name": "keys", "description": "Create, list, update, delete and rotate API keys."},
            {"name": "usage", "description": "Usage statistics from the request log."},
            {"name": "alerts", "description": "Findings of the unusual-usage monitor."},
        ],
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}, {"sessionCookie": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer sk-ar-… (a key with scope manage)",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "x-api-key: sk-ar-… (a key with scope manage)",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "agentrouter_session",
                    "description": (
                        "The session cookie set by sign-in (`__Host-agentrouter_session` when the server's public "
                        "URL is https). A request with it that changes something (not GET/HEAD/OPTIONS) must also "
                        "send `X-CSRF-Token` (from sign-in or GET /api/v1/auth/session) and a same-site `Origin`."
                    ),
                },
            },
        },
    }


@cache
def openapi_json() -> bytes:
    return msgspec.json.encode(openapi_document())


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "description": op.description,
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"\{(\w+)\}", op.path)
    ]
    if op.query is not None:
        params.extend(_query_params(op.query))
    if params:
        out["parameters"] = params
    if op.auth == "public":
        out["security"] = []
    if op.body is not None:
        out["requestBody"] = {
            "required": False,
            "description": "A JSON object; an empty body counts as {}.",
            "content": {"application/json": {"schema": {"$ref": REF.format(name=op.body.__name__)}}},
        }
    ok: dict[str, Any]
    if op.redirect:
        ok = {
            "description": "Redirect the browser.",
            "headers": {"Location": {"description": "Where to.", "schema": {"type": "string"}}},
        }
    else:
        ok = {
            "description": "Success.",
            "headers": dict(_RATE_HEADERS),
            "content": {"application/json": {"schema": {"$ref": REF.format(name=op.response.__name__)}}},
        }
    if op.status == 201:
        ok["headers"] = {
            **_RATE_HEADERS,
            "Location": {"description": "The new key's URL.", "schema": {"type": "string"}},
        }
    responses: dict[str, Any] = {str(op.status): ok}
    for status in sorted(op.errors):
        err: dict[str, Any] = {
            "description": _ERROR_TEXT.get(status, "Error."),
            "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorBody")}}},
        }
        if status == 429:
            err["headers"] = {
                **_RATE_HEADERS,
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
            }
        responses[str(status)] = err
    out["responses"] = responses
    return out


def _query_params(struct: Any) -> list[dict[str, Any]]:
    (_schema,), components = msgspec.json.schema_components([struct], ref_template=REF)
    props = components[struct.__name__]["properties"]
    out = []
    for name, prop in props.items():
        prop = _inline(copy.deepcopy(prop), components)
        prop.pop("title", None)
        description = prop.pop("description", None)
        variants = prop.get("anyOf")
        if variants:  # "X or null": a query parameter is absent instead
            rest = [v for v in variants if v.get("type") != "null"]
            if len(rest) == 1:
                default = prop.get("default")
                prop = rest[0]
                if default is not None:
                    prop["default"] = default
        if prop.get("default", "x") is None:
            prop.pop("default")
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": prop}
        if description:
            param["description"] = description
        if prop.get("type") == "array":
            param["style"] = "form"
            param["explode"] = True
        out.append(param)
    return out


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = copy.deepcopy(components[ref.rsplit("/", 1)[1]])
            target.pop("title", None)
            return _inline(target, components)
        return {k: _inline(v, components) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, components) for v in schema]
    return schema
