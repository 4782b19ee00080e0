"""The ``agentrouter keys`` CLI, run as a real subprocess on a real SQLite file."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from agentrouter._core import AUTH_OK, AUTH_REVOKED, KeyTable
from tests.conftest import Cli, open_core
from tests.test_keys_lifecycle import gateway_auth


def test_create_shows_the_key_once_and_list_shows_prefix_and_limit(cli: Cli, data_dir: Path) -> None:
    proc = cli.run("keys", "create", "--name", "ci-bot", "--requests", "100", "--interval", "60")
    assert proc.returncode == 0, proc.stderr
    key = next(w for w in proc.stdout.split() if w.startswith("sk-ar-"))
    assert len(key) == 44
    assert "will not be shown again" in proc.stdout

    listing = cli.run("keys", "list")
    assert listing.returncode == 0
    assert "ci-bot" in listing.stdout
    assert key[:12] + "…" in listing.stdout
    assert "100/1m" in listing.stdout
    assert key not in listing.stdout  # never shown again

    # At rest only the digest exists: the plaintext is in no file of the data dir.
    for path in data_dir.iterdir():
        assert key.encode() not in path.read_bytes(), path
    secret_mode = stat.S_IMODE((data_dir / "secret").stat().st_mode)
    assert secret_mode == 0o600


def test_json_output_for_scripts(cli: Cli) -> None:
    created = cli.json(
        "keys",
        "create",
        "--name",
        "a",
        "--requests",
        "5",
        "--interval",
        "2m",
        "--metadata",
        '{"environment": "production", "team": "eng"}',
        "--expires-in",
        "7d",
    )
    assert created["key"].startswith("sk-ar-")
    assert created["prefix"] == created["key"][:12] + "…"
    assert created["rate_limit"] == {"requests": 5, "interval": 120.0}
    assert created["metadata"] == {"environment": "production", "team": "eng"}
    assert created["expires_at"] == pytest.approx(time.time() + 7 * 86400, abs=60)
    assert created["scope"] == "inference"

    listed = cli.json("keys", "list")
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "digest" not in listed[0]
    assert listed[0]["usage"]["requests"] == 0

    shown = cli.json("keys", "show", created["id"])
    assert shown["name"] == "a" and shown["last_used_at"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metadata", "[1, 2]"], "JSON object"),
        (["--metadata", "{not json"], "not valid JSON"),
        (["--requests", "0"], "between 1 and"),
        (["--requests", "-5"], "between 1 and"),
        (["--requests", "10", "--interval", "0"], "more than 0"),
        (["--requests", "10", "--interval", "-3"], "duration"),
        (["--interval", "60"], "--interval needs --requests"),
        (["--expires-in", "soon"], "not a duration"),
        (["--requests", "ten"], "invalid int"),
    ],
)
def test_bad_input_says_what_to_fix_and_writes_nothing(cli: Cli, args: list[str], message: str) -> None:
    proc = cli.run("keys", "create", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "sk-ar-" not in proc.stdout
    assert cli.json("keys", "list") == []


@pytest.mark.parametrize("action", [["show"], ["delete", "--yes"], ["rotate"], ["update", "--name", "x"]])
def test_unknown_id_is_an_error(cli: Cli, action: list[str]) -> None:
    proc = cli.run("keys", action[0], "key_doesnotexist", *action[1:])
    assert proc.returncode == 1
    assert "key_doesnotexist" in proc.stderr


def test_update_changes_name_limits_metadata_and_expiry(cli: Cli) -> None:
    k = cli.json("keys", "create", "--name", "old", "--requests", "10")
    assert k["rate_limit"] == {"requests": 10, "interval": 60.0}
    u = cli.json(
        "keys",
        "update",
        k["id"],
        "--name",
        "new",
        "--requests",
        "20",
        "--interval",
        "1h",
        "--metadata",
        '{"team": "ml"}',
        "--expires-in",
        "1d",
    )
    assert u["name"] == "new"
    assert u["rate_limit"] == {"requests": 20, "interval": 3600.0}
    assert u["metadata"] == {"team": "ml"}
    assert u["expires_at"] == pytest.approx(time.time() + 86400, abs=60)
    u = cli.json("keys", "update", k["id"], "--no-limit", "--no-expiry")
    assert u["rate_limit"] is None and u["expires_at"] is None
    bad = cli.run("keys", "update", k["id"], "--metadata", '"text"')
    assert bad.returncode == 2
    assert cli.json("keys", "show", k["id"])["metadata"] == {"team": "ml"}
    assert cli.run("keys", "update", k["id"]).returncode == 2  # nothing to update


def test_delete_asks_unless_yes(cli: Cli) -> None:
    k = cli.json("keys", "create")
    refused = cli.run("keys", "delete", k["id"], input="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli.json("keys", "show", k["id"])["state"] == "active"

    deleted = cli.json("keys", "delete", k["id"], "--yes")
    assert deleted["state"] == "deleted"
    assert cli.json("keys", "list") == []
    assert [x["state"] for x in cli.json("keys", "list", "--all")] == ["deleted"]
    assert cli.run("keys", "delete", k["id"], "--yes").returncode == 1


def test_rotate_keeps_settings_and_gives_a_grace_period(cli: Cli) -> None:
    old = cli.json("keys", "create", "--name", "svc", "--requests", "7", "--metadata", '{"a": 1}')
    new = cli.json("keys", "rotate", old["id"], "--grace", "1h")
    assert new["key"] != old["key"] and new["id"] != old["id"]
    assert (new["name"], new["rate_limit"], new["metadata"]) == ("svc", old["rate_limit"], {"a": 1})
    old_now = cli.json("keys", "show", old["id"])
    assert old_now["rotated_to"] == new["id"]
    assert old_now["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert cli.run("keys", "rotate", old["id"], "--grace", "forever").returncode == 2
    twice = cli.run("keys", "rotate", old["id"])
    assert twice.returncode == 1 and new["id"] in twice.stderr  # points at the successor


async def test_changes_reach_a_running_process_on_its_next_request(cli: Cli, data_dir: Path) -> None:
    """Another process (the CLI) creates and deletes keys; this process, holding a
    table loaded earlier, sees both on its very next authentication."""
    first = cli.json("keys", "create")
    core = await open_core(data_dir, secret=None)  # the data directory's secret, as the CLI's
    try:
        table: KeyTable = core.new_table()
        await core.load_table(table)
        assert table.authenticate(first["key"])[0] == AUTH_OK

        second = cli.json("keys", "create")
        assert await gateway_auth(core, table, second["key"]) == AUTH_OK

        cli.json("keys", "delete", first["id"], "--yes")
        # No reload: the shared revoked flag alone refuses it.
        assert table.authenticate(first["key"])[0] == AUTH_REVOKED
    finally:
        await core.close()


def test_the_cli_finds_the_servers_data_dir(tmp_path: Path, cli: Cli) -> None:
    """Keys made with --config land where a server with that config looks."""
    server_dir = tmp_path / "server-data"
    config = tmp_path / "agentrouter.toml"
    config.write_text(f'[server]\ndata_dir = "{server_dir}"\n')
    del cli.env["AGENTROUTER_DATA_DIR"]
    cli.env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    made = cli.json("--config", str(config), "keys", "create")
    assert (server_dir / "agentrouter.db").exists()
    assert [k["id"] for k in cli.json("--data-dir", str(server_dir), "keys", "list")] == [made["id"]]
    # Without either, the default data dir is used: another one, empty.
    assert cli.json("keys", "list") == []
    assert (tmp_path / "xdg" / "agentrouter" / "agentrouter.db").exists()


@pytest.mark.store_backends("postgres")
def test_keys_against_postgres_act_on_the_shared_state(tmp_path: Path, store_url: str | None) -> None:
    """``AGENTROUTER_STORE_URL=postgresql://…``: the CLI of one host creates, the CLI of
    another host (its own data directory) lists and deletes the same keys."""
    assert store_url is not None
    host1, host2 = Cli(tmp_path / "h1", store_url), Cli(tmp_path / "h2", store_url)
    for cli in (host1, host2):  # the digests of both hosts must agree: one secret
        cli.env["AGENTROUTER_SECRET"] = "shared-secret-0123456789abcdef0123456789"
    made = host1.json("keys", "create", "--name", "shared", "--requests", "5")
    listed = host2.json("keys", "list")
    assert [k["id"] for k in listed] == [made["id"]] and listed[0]["name"] == "shared"
    assert not (tmp_path / "h1" / "agentrouter.db").exists()  # nothing went to SQLite
    assert host2.run("keys", "delete", made["id"], "--yes").returncode == 0
    assert host1.json("keys", "list") == []
    assert host1.json("keys", "list", "--all")[0]["state"] == "deleted"
