"""``agentrouter users …``, ``invites create`` and ``keys create --owner`` through the
real command in a subprocess, against a data directory the test also opens."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from agentrouter.accounts.errors import InvalidToken
from agentrouter.accounts.service import SignedIn
from agentrouter.core import Core
from agentrouter.server import prepare
from tests.accounts_helpers import FIREFOX, STRONG, service
from tests.conftest import Cli, settings_on

pytestmark = pytest.mark.store_backends


async def _core(data_dir: Path, store_url: str | None = None) -> Core:
    # The CLI's own secret file, the CLI's store.
    return await Core.from_settings(settings_on(data_dir, secret=None, store_url=store_url))


def test_users_create_list_show_set_role(cli: Cli) -> None:
    admin = cli.run("users", "create", "--email", "Root@Example.com", "--admin", "--name", "Root", "--json")
    assert admin.returncode == 0, admin.stderr
    made = cli.json("users", "create", "--email", "member@example.com")
    assert made["role"] == "member" and made["email_verified"] and not made["has_password"]
    assert made["set_password_link"].startswith("http://127.0.0.1:8080/reset-password?token=arr_")
    users = cli.json("users", "list")
    assert [(u["email"], u["role"]) for u in users] == [("Root@Example.com", "admin"), ("member@example.com", "member")]
    assert all("password_hash" not in u and "totp_secret" not in u for u in users)
    shown = cli.json("users", "show", "root@example.com")
    assert shown["display_name"] == "Root" and shown["sessions"] == [] and shown["identities"] == []
    assert cli.json("users", "show", made["id"])["email"] == "member@example.com"
    assert cli.json("users", "set-role", "member@example.com", "admin")["role"] == "admin"
    human = cli.run("users", "list")
    assert human.returncode == 0 and "Root@Example.com" in human.stdout and "admin" in human.stdout


def test_bad_input_and_unknown_users(cli: Cli) -> None:
    weak = cli.run("users", "create", "--email", "w@example.com", "--password-stdin", input="password1\n")
    assert weak.returncode == 2 and "password" in weak.stderr and "Traceback" not in weak.stderr
    bad = cli.run("users", "create", "--email", "not-an-address", "--json")
    assert bad.returncode == 2 and '"error"' in bad.stdout
    missing = cli.run("users", "disable", "ghost@example.com")
    assert missing.returncode == 1 and "no user with email" in missing.stderr
    assert cli.run("users", "create", "--email", "dup@example.com").returncode == 0
    dup = cli.run("users", "create", "--email", "DUP@example.com")
    assert dup.returncode == 1 and "has an account already" in dup.stderr
    last = cli.run("users", "create", "--email", "only-admin@example.com", "--admin")
    assert last.returncode == 0
    refused = cli.run("users", "set-role", "only-admin@example.com", "member")
    assert refused.returncode == 1 and "last admin" in refused.stderr


async def test_sessions_logout_all_disable_and_owned_keys(cli: Cli, data_dir: Path, store_url: str | None) -> None:
    proc = cli.run("users", "create", "--email", "kim@example.com", "--password-stdin", "--json", input=STRONG + "\n")
    assert proc.returncode == 0, proc.stderr
    owned = cli.json("keys", "create", "--name", "kim's", "--owner", "kim@example.com")
    kim_id = cli.json("users", "show", "kim@example.com")["id"]
    assert owned["owner"] == kim_id
    unknown_owner = cli.run("keys", "create", "--owner", "nobody@example.com")
    assert unknown_owner.returncode == 1 and "no user" in unknown_owner.stderr

    core = await _core(data_dir, store_url)
    try:
        acc = service(core)
        signed = [await acc.sign_in(email="kim@example.com", password=STRONG, user_agent=FIREFOX) for _ in range(2)]
        assert all(isinstance(s, SignedIn) for s in signed)
        sessions = cli.json("users", "sessions", "kim@example.com")
        assert len(sessions) == 2 and sessions[0]["device"] == "Firefox on Linux"
        assert cli.json("users", "logout-all", "kim@example.com")["sessions_ended"] == 2
        for s in signed:
            assert isinstance(s, SignedIn) and await acc.authenticate_session(s.token) is None

        table = core.new_table()
        await core.load_table(table)
        assert table.authenticate(owned["key"])[1] is not None
        disabled = cli.json("users", "disable", "kim@example.com")
        assert disabled["disabled"]
        from agentrouter._core import AUTH_REVOKED

        assert table.authenticate(owned["key"])[0] == AUTH_REVOKED  # the next request is refused
        assert cli.json("keys", "show", owned["id"])["state"] == "deleted"
        assert not cli.json("users", "enable", "kim@example.com")["disabled"]
    finally:
        await core.close()


async def test_reset_password_link_and_invites(cli: Cli, data_dir: Path, store_url: str | None) -> None:
    assert (
        cli.run("users", "create", "--email", "lee@example.com", "--password-stdin", input=STRONG + "\n").returncode
        == 0
    )
    link = cli.json("users", "reset-password", "lee@example.com")["reset_link"]
    token = link.rpartition("token=")[2]
    invite = cli.json("invites", "create", "--email", "new@example.com", "--admin", "--days", "2")
    assert invite["role"] == "admin" and invite["email"] == "new@example.com"
    assert invite["link"].startswith("http://127.0.0.1:8080/register?token=ari_")
    human = cli.run("invites", "create")
    assert human.returncode == 0 and "for anyone who has it" in human.stdout
    assert len(list((data_dir / "outbox").glob("*.eml"))) == 2  # the reset link and the bound invitation

    core = await _core(data_dir, store_url)
    try:
        acc = service(core)
        await acc.reset_password(token, "Fresh-Meadow-88-Lark")
        assert isinstance(await acc.sign_in(email="lee@example.com", password="Fresh-Meadow-88-Lark"), SignedIn)
        await acc.register(email="new@example.com", password=STRONG, invitation=invite["link"].rpartition("token=")[2])
    finally:
        await core.close()
    assert cli.json("users", "show", "new@example.com")["role"] == "admin"


def test_serve_prints_the_first_admins_setup_link_until_there_is_a_user(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_on(data_dir, secret=None)
    prepare(settings)
    first = capsys.readouterr().err
    assert "Create the first admin account" in first and "agentrouter users create --email EMAIL --admin" in first
    prepare(settings)  # a restart: a new link, the old one stops working
    second = capsys.readouterr().err
    old, new = (re.search(r"(http://\S+/setup\?token=\S+)", t).group(1) for t in (first, second))  # type: ignore[union-attr]
    assert old != new

    async def use(link: str) -> None:
        core = await _core(data_dir)
        try:
            await service(core).setup_admin(
                token=link.rpartition("token=")[2], email="root@example.com", password=STRONG
            )
        finally:
            await core.close()

    with pytest.raises(InvalidToken):
        asyncio.run(use(old))
    asyncio.run(use(new))
    prepare(settings)
    assert "setup" not in capsys.readouterr().err
