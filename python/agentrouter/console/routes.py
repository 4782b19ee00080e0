"""The console's routes: (method, path, handler). Path parameters are ``{name}``."""

from __future__ import annotations

from agentrouter.console import alerts, auth, keys
from agentrouter.console.app import Console
from agentrouter.console.http import Request, Response, redirect


async def home(c: Console, req: Request) -> Response:
    viewer = await c.viewer(req)
    return redirect("/keys" if viewer is not None else "/sign-in")


ROUTES = (
    ("GET", "/", home),
    ("GET", "/sign-in", auth.signin_page),
    ("POST", "/sign-in", auth.signin),
    ("POST", "/sign-out", auth.signout),
    ("GET", "/keys", keys.key_list),
    ("GET", "/keys/new", keys.new_key),
    ("POST", "/keys/new", keys.create_key),
    ("GET", "/keys/{key_id}", keys.key_detail),
    ("POST", "/keys/{key_id}", keys.update_key),
    ("POST", "/keys/{key_id}/rotate", keys.rotate_key),
    ("GET", "/keys/{key_id}/delete", keys.delete_confirm),
    ("POST", "/keys/{key_id}/delete", keys.delete_key),
    ("GET", "/alerts", alerts.alert_list),
    ("POST", "/alerts/{alert_id}/ack", alerts.acknowledge),
)
