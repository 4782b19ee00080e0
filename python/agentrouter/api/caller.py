"""Who is calling ``/api/v1``: a manage key, a session cookie, or nobody (the public
account routes: register, sign in, reset…).

``Caller.actor`` is what the key and accounts services take (``agentrouter.actor``):
a manage key without an owner acts as the operator, one owned by a person as that
person, a session as its user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentrouter.api.errors import ApiError

if TYPE_CHECKING:
    from agentrouter.accounts.service import SessionInfo
    from agentrouter.actor import Actor

__all__ = ["Caller"]


class Caller:
    __slots__ = ("actor", "client_ip", "key_id", "session", "token", "user_agent")

    def __init__(
        self,
        *,
        actor: Actor | None,
        client_ip: str | None,
        user_agent: str | None,
        key_id: str | None = None,
        session: SessionInfo | None = None,
        token: str | None = None,
    ) -> None:
        self.actor = actor
        self.client_ip = client_ip
        self.user_agent = user_agent
        self.key_id = key_id
        self.session = session
        """The session of the cookie (None with a manage key or nobody)."""
        self.token = token
        """The session cookie's token (only with ``session``)."""

    @property
    def caller_id(self) -> str | None:
        """For logs: the key id, else the session's user id."""
        if self.key_id is not None:
            return self.key_id
        return self.actor.user_id if self.actor is not None else None

    @property
    def user_id(self) -> str | None:
        return self.actor.user_id if self.actor is not None else None

    def need_actor(self) -> Actor:
        """The actor of a route that needs a credential (the router made sure)."""
        if self.actor is None:
            raise ApiError(401, "Sign in, or send a manage key, to call this.")
        return self.actor

    def need_user(self) -> Actor:
        """The actor of a route about one's own account: a session, or a manage key
        owned by a person; an instance manage key gets 403."""
        actor = self.need_actor()
        if actor.user_id is None:
            raise ApiError(
                403,
                "This is about a person's own account: sign in, or use a manage key owned by a user "
                "(agentrouter keys create --scope manage --owner EMAIL); an instance key has no account.",
            )
        return actor

    def need_session(self, what: str) -> SessionInfo:
        if self.session is None:
            raise ApiError(403, f"{what} needs a signed-in browser session (a session cookie), not a manage key.")
        return self.session
