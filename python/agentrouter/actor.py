"""Who is asking: the principal of a management operation.

Every operation of the key service and the accounts service takes an ``Actor``:

* ``INSTANCE`` (and ``instance_actor(via=…)``): the operator — the CLI on the
  server's host, or a manage key without an owner. Sees and changes everything;
  keys it creates are instance keys (no owner) unless it names one.
* ``user_actor(user)``: a signed-in person (a session), or a manage key owned by a
  person (it acts as its owner). ``admin`` sees and changes everyone's keys and
  accounts; ``member`` only their own — anything else is "not found" (404), never
  "forbidden", so ids are not confirmed.

``via`` says through what (``cli``, ``key:<id>``, ``session:<id>``) and
``client_ip`` from where, for the audit log.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from agentrouter.store.models import Role, UserRow

__all__ = ["INSTANCE", "Actor", "instance_actor", "user_actor"]


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["instance", "user"]
    user_id: str | None = None
    role: Role | None = None
    email_verified: bool = False
    via: str = "cli"
    client_ip: str | None = None
    user_agent: str | None = None

    @property
    def is_admin(self) -> bool:
        """The operator, or a user with the admin role."""
        return self.kind == "instance" or self.role == "admin"

    def may_see(self, owner: str | None) -> bool:
        """Whether this actor may see (and act on) what ``owner`` owns (None: the
        instance's)."""
        return self.is_admin or (owner is not None and owner == self.user_id)

    @property
    def audit_name(self) -> str:
        """The audit log's ``actor``: the user id, else ``via``."""
        return self.user_id or self.via


INSTANCE: Final = Actor(kind="instance", via="cli")


def instance_actor(*, via: str, client_ip: str | None = None, user_agent: str | None = None) -> Actor:
    return Actor(kind="instance", via=via, client_ip=client_ip, user_agent=user_agent)


def user_actor(user: UserRow, *, via: str, client_ip: str | None = None, user_agent: str | None = None) -> Actor:
    return Actor(
        kind="user",
        user_id=user.id,
        role=user.role,
        email_verified=user.email_verified,
        via=via,
        client_ip=client_ip,
        user_agent=user_agent,
    )
