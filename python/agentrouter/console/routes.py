"""The console's routes: (method, path, handler). Path parameters are ``{name}``.

The paths of the links in mails are the accounts service's (``VERIFY_PATH``,
``RESET_PATH``, ``INVITE_PATH``, ``SETUP_PATH``) and the two-factor step's the
account routes' (``TWO_FACTOR_PAGE``): ``tests/test_console.py`` checks they agree."""

from __future__ import annotations

from agentrouter.console import account, admin, alerts, auth, keys
from agentrouter.console.app import Console
from agentrouter.console.http import Request, Response, redirect


async def home(c: Console, req: Request) -> Response:
    viewer = await c.viewer(req)
    return redirect("/keys" if viewer is not None else "/sign-in")


ROUTES = (
    ("GET", "/", home),
    ("GET", "/sign-in", auth.signin_page),
    ("POST", "/sign-in", auth.signin),
    ("GET", "/sign-in/two-factor", auth.two_factor_page),
    ("POST", "/sign-in/two-factor", auth.two_factor),
    ("POST", "/sign-out", auth.signout),
    ("GET", "/register", auth.register_page),
    ("POST", "/register", auth.register),
    ("GET", "/verify-email", auth.verify_page),
    ("POST", "/verify-email", auth.verify),
    ("POST", "/verify-email/resend", auth.resend),
    ("GET", "/reset-password", auth.reset_page),
    ("POST", "/reset-password", auth.reset),
    ("GET", "/setup", auth.setup_page),
    ("POST", "/setup", auth.setup),
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
    ("GET", "/devices", account.devices_page),
    ("POST", "/devices/end-others", account.end_others),
    ("POST", "/devices/end-all", account.end_all),
    ("POST", "/devices/{session_id}/end", account.end_session),
    ("GET", "/account", account.account_page),
    ("POST", "/account/profile", account.update_profile),
    ("POST", "/account/password", account.change_password),
    ("POST", "/account/identities/{provider}/link", account.link_identity),
    ("POST", "/account/identities/{identity_id}/unlink", account.unlink_identity),
    ("POST", "/account/totp", account.totp_start),
    ("POST", "/account/totp/confirm", account.totp_confirm),
    ("POST", "/account/totp/disable", account.totp_disable),
    ("POST", "/account/totp/recovery-codes", account.totp_recovery_codes),
    ("GET", "/admin", admin.admin_page),
    ("POST", "/admin/invitations", admin.create_invitation),
    ("POST", "/admin/invitations/{invitation_id}/revoke", admin.revoke_invitation),
    ("POST", "/admin/users/{user_id}", admin.update_user),
)
