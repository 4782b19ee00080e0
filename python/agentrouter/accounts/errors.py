"""The errors of the accounts service.

Each has an HTTP-ish ``status`` and a stable machine-readable ``code`` (what the
management API puts in its error body and the console switches on); the message is
for people. An edge maps the whole family in one place through ``AccountError``.
Messages never tell whether an email address has an account (no enumeration):
``InvalidCredentials`` is the same for an unknown address, a wrong password and an
account without a password.
"""

from __future__ import annotations

from typing import ClassVar

from agentrouter.errors import AgentRouterError

__all__ = [
    "AccountDisabled",
    "AccountError",
    "AccountInputError",
    "AccountNotFound",
    "Busy",
    "Conflict",
    "IdentityConflict",
    "IdentityNotLinked",
    "InvalidCredentials",
    "InvalidSecondFactor",
    "InvalidToken",
    "LastSignInMethod",
    "PermissionDenied",
    "RegistrationClosed",
    "Throttled",
    "WeakPassword",
]


class AccountError(AgentRouterError):
    """Base of the accounts errors: ``status`` (HTTP) and ``code`` (stable)."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "account_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        """The input field at fault, when there is one (``email``, ``password``)."""


class AccountInputError(AccountError, ValueError):
    """Bad input (an address that is not one, a name too long); nothing was written."""

    status = 422
    code = "invalid_input"


class WeakPassword(AccountInputError):
    """The password breaks the policy or is guessable; the message says why."""

    code = "weak_password"


class InvalidCredentials(AccountError):
    """Wrong email or password (the same for an unknown address)."""

    status = 401
    code = "invalid_credentials"


class AccountDisabled(AccountError):
    """The account is disabled by an admin (told only after the password was right)."""

    status = 403
    code = "account_disabled"


class InvalidSecondFactor(AccountError):
    """The TOTP or recovery code is wrong or was used already, or the pending sign-in
    expired."""

    status = 401
    code = "invalid_second_factor"


class InvalidToken(AccountError):
    """The link (verification, reset, invitation, setup) is unknown, used or expired."""

    status = 400
    code = "invalid_token"


class Throttled(AccountError):
    """Too many sign-in attempts for this account or from this address; no password
    was checked. ``retry_after`` is in seconds (429 with ``Retry-After``)."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(AccountError):
    """Too many password hashes are queued in this process; try again shortly."""

    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RegistrationClosed(AccountError):
    """Registration is by invitation (or for some domains only) and this one does not
    qualify."""

    status = 403
    code = "registration_closed"


class PermissionDenied(AccountError):
    """The caller may not do this (a member on an admin operation)."""

    status = 403
    code = "permission_denied"


class AccountNotFound(AccountError, LookupError):
    """No such user, session, identity or invitation — or not one this caller may see
    (404, not 403: ids are not confirmed)."""

    status = 404
    code = "not_found"


class IdentityNotLinked(AccountError):
    """A first OAuth sign-in whose email belongs to an account it may not be linked to
    automatically; the message says how to link it from the account's settings."""

    status = 409
    code = "identity_not_linked"


class IdentityConflict(AccountError):
    """The OAuth identity is linked to another account already."""

    status = 409
    code = "identity_conflict"


class LastSignInMethod(AccountError):
    """Unlinking this would leave the account no way to sign in."""

    status = 409
    code = "last_sign_in_method"


class Conflict(AccountError):
    """The account's state does not allow this (the last admin, TOTP already on)."""

    status = 409
    code = "conflict"
