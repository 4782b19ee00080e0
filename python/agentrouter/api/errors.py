"""One error shape for everything under ``/api``::

    {"error": {"type": "not_found", "message": "no key with id 'key_…'", "field": null, "code": null}}

``type`` is one of ``ERROR_TYPES``; ``field`` names the offending body field or query
parameter (``requests``, ``rate_limit.interval``, ``label``) when there is one.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from agentrouter.errors import AgentRouterError

ErrorType = Literal[
    "invalid_request",
    "authentication_error",
    "permission_error",
    "not_found",
    "method_not_allowed",
    "conflict",
    "rate_limit_error",
    "api_error",
    "service_unavailable",
]

STATUS_TYPES: Final[dict[int, ErrorType]] = {
    400: "invalid_request",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    408: "invalid_request",
    413: "invalid_request",
    415: "invalid_request",
    422: "invalid_request",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
}


class ErrorDetail(msgspec.Struct, kw_only=True):
    type: ErrorType
    message: str
    field: str | None = None
    """The body field (dotted path) or query parameter at fault, when there is one."""
    code: str | None = None
    """A stable, more precise reason for the account routes (``invalid_credentials``,
    ``too_many_attempts``, ``email_not_verified``, ``csrf_failed``…); null otherwise."""


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


class ApiError(AgentRouterError):
    """Raised by handlers; turned into the error body with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        type_: ErrorType | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or []
        self._type = type_
        self.code = code

    @property
    def type(self) -> ErrorType:
        if self._type is not None:
            return self._type
        return STATUS_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request")

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(type=self.type, message=self.message, field=self.field, code=self.code))


STORE_RETRY_AFTER: Final = 5
"""Seconds a caller is told to wait when the database is unavailable."""


def store_unavailable() -> ApiError:
    """The database (PostgreSQL) cannot be reached: 503 ``service_unavailable``, for
    reads and writes alike. The gateway's ``/v1`` goes on serving the keys it loaded."""
    return ApiError(
        503,
        "The database is unavailable, so keys, usage and alerts can be neither read nor changed right now; "
        "retry shortly.",
        headers=[(b"retry-after", str(STORE_RETRY_AFTER).encode())],
        type_="service_unavailable",
    )


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"no {what} with id {ident!r}")


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]*)`")


def validation_error(exc: msgspec.ValidationError, *, prefix: str = "") -> ApiError:
    """A 422 naming the field of a msgspec validation error.

    ``Expected `int` >= 1 - at `$.requests``` → field ``requests``;
    ``Object contains unknown field `digest``` → field ``digest`` ("not a field you can set").
    """
    text = str(exc)
    path = ""
    m = _AT.search(text)
    if m:
        path = m.group("path")
        text = text[: m.start()]
    path = path.lstrip(".")
    unknown = _UNKNOWN.match(text)
    missing = _MISSING.match(text)
    if unknown:
        name = unknown.group("name")
        field = f"{path}.{name}" if path else name
        message = f"{field}: not a field you can set here"
    elif missing:
        name = missing.group("name")
        field = f"{path}.{name}" if path else name
        message = f"{field}: required"
    else:
        field = path or None
        message = f"{field}: {text}" if field else text
    if prefix and field:
        field = prefix + field
    return ApiError(422, message, field=field)
