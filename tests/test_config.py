"""Settings: the TOML file, AGENTROUTER_* overrides, and messages that name the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agentrouter.config import DEFAULT_MAX_BODY_BYTES, ConfigError, DetectorConfig, Settings, load_settings
from agentrouter.gateway.mock import MODELS

GOOD = """
[server]
host = "0.0.0.0"
port = 9000
workers = 3
max_body_bytes = 1048576

[[providers]]
name = "openai"
type = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "TEST_OPENAI_KEY"
models = ["gpt-4o", "gpt-4o-*"]
read_timeout = 120

[[providers]]
name = "claude"
type = "anthropic"
base_url = "https://api.anthropic.com/v1"
api_key = "sk-ant-x"
models = ["claude-*"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentrouter.toml"
    path.write_text(text)
    return path


def test_defaults_serve_the_mock(tmp_path: Path) -> None:
    s = load_settings(env={})
    assert (s.host, s.port, s.workers, s.max_body_bytes) == ("127.0.0.1", 8080, None, DEFAULT_MAX_BODY_BYTES)
    assert DEFAULT_MAX_BODY_BYTES == 32 * 1024 * 1024
    assert s.effective_workers == (os.cpu_count() or 1)
    assert [(p.name, p.type, p.models) for p in s.providers] == [("mock", "mock", MODELS)]


def test_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD), env={"TEST_OPENAI_KEY": "sk-from-env"})
    assert (s.host, s.port, s.workers, s.max_body_bytes) == ("0.0.0.0", 9000, 3, 1048576)
    openai, claude = s.providers
    assert openai.base_url == "https://api.openai.com/v1" and openai.api_key == "sk-from-env"
    assert openai.models == ("gpt-4o", "gpt-4o-*") and openai.read_timeout == 120
    assert claude.api_key == "sk-ant-x" and claude.type == "anthropic"
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]  # frozen


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    env = {
        "TEST_OPENAI_KEY": "k",
        "AGENTROUTER_CONFIG": str(write(tmp_path, GOOD)),
        "AGENTROUTER_PORT": "9100",
        "AGENTROUTER_WORKERS": "2",
        "AGENTROUTER_DATA_DIR": "/srv/ar",
        "AGENTROUTER_MAX_BODY_BYTES": "4096",
        "AGENTROUTER_ACCESS_LOG": "true",
        "AGENTROUTER_PROVIDERS__OPENAI__BASE_URL": "http://127.0.0.1:9/v1",
        "AGENTROUTER_PROVIDERS__OPENAI__MODELS": "a, b*",
        "AGENTROUTER_PROVIDERS__EXTRA__TYPE": "mock",
        "AGENTROUTER_PROVIDERS__EXTRA__MODELS": "mock-x",
        # Client-side variables of the product document are not server settings.
        "AGENTROUTER_API_KEY": "sk-ar-whatever",
        "AGENTROUTER_BASE_URL": "https://example.com/v1",
    }
    s = load_settings(env=env, overrides={"port": 9200, "host": None})
    assert (s.port, s.workers, s.data_dir, s.max_body_bytes, s.access_log) == (9200, 2, "/srv/ar", 4096, True)
    assert s.host == "0.0.0.0"
    by_name = {p.name: p for p in s.providers}
    assert by_name["openai"].base_url == "http://127.0.0.1:9/v1" and by_name["openai"].models == ("a", "b*")
    assert by_name["extra"].type == "mock" and by_name["extra"].models == ("mock-x",)
    assert [p.name for p in s.providers] == ["openai", "claude", "extra"]


def test_settings_survive_pickling_for_spawned_workers() -> None:
    import pickle

    s = load_settings(env={})
    assert pickle.loads(pickle.dumps(s)) == s
    assert msgspec.json.decode(msgspec.json.encode(s), type=Settings) == s


def test_request_log_and_monitor_settings(tmp_path: Path) -> None:
    """Defaults; [server] keys and the [monitor] table; AGENTROUTER_* over the file."""
    s = load_settings(env={})
    assert (s.request_log_retention_days, s.alert_webhook_url, s.monitor_enabled, s.monitor_interval) == (
        30,
        None,
        True,
        60,
    )
    assert (s.rollup_retention_days, s.alert_webhook_timeout, s.alert_webhook_retries) == (400, 5, 3)
    assert s.monitor == DetectorConfig() and s.monitor.volume_factor == 5

    text = (
        "[server]\nrequest_log_retention_days = 7.5\nalert_webhook_url = 'https://hooks.example.test/ar'\n"
        "monitor_enabled = false\nmonitor_interval = 30\nalert_webhook_retries = 0\n"
        "[monitor]\nvolume_factor = 8\nnew_ip_ipv6_prefix = 48\n"
    )
    s = load_settings(write(tmp_path, text), env={})
    assert (s.request_log_retention_days, s.alert_webhook_url, s.monitor_enabled, s.monitor_interval) == (
        7.5,
        "https://hooks.example.test/ar",
        False,
        30,
    )
    assert s.alert_webhook_retries == 0
    assert (s.monitor.volume_factor, s.monitor.new_ip_ipv6_prefix, s.monitor.failure_rate) == (8, 48, 0.5)

    s = load_settings(
        write(tmp_path, text),
        env={
            "AGENTROUTER_REQUEST_LOG_RETENTION_DAYS": "14",
            "AGENTROUTER_ALERT_WEBHOOK_URL": "",  # empty: no webhook
            "AGENTROUTER_MONITOR_ENABLED": "true",
            "AGENTROUTER_MONITOR_INTERVAL": "0.5",
            "AGENTROUTER_MONITOR_VOLUME_FACTOR": "9",
            "AGENTROUTER_MONITOR_FAILURE_RATE": "0.75",
        },
    )
    assert (s.request_log_retention_days, s.alert_webhook_url, s.monitor_enabled, s.monitor_interval) == (
        14,
        None,
        True,
        0.5,
    )
    assert (s.monitor.volume_factor, s.monitor.new_ip_ipv6_prefix, s.monitor.failure_rate) == (9, 48, 0.75)
    assert load_settings(env={"AGENTROUTER_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"}).alert_webhook_url == (
        "http://127.0.0.1:9/hook"
    )


def test_the_api_and_monitor_read_no_environment_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """One source of truth: what the management API and its monitor use is the Settings
    object they were given, whatever the environment says afterwards."""
    from agentrouter.api import build_api

    settings = load_settings(env={"AGENTROUTER_MONITOR_INTERVAL": "5", "AGENTROUTER_MONITOR_VOLUME_FACTOR": "6"})
    monkeypatch.setenv("AGENTROUTER_MONITOR_INTERVAL", "99")
    monkeypatch.setenv("AGENTROUTER_MONITOR_VOLUME_FACTOR", "99")
    api = build_api(settings=settings)
    assert api.settings is settings and api.settings.monitor_interval == 5 and api.settings.monitor.volume_factor == 6
    # Built without settings (the standalone dev server), it loads them once, the same way.
    assert build_api().settings == load_settings()


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[server]\nport = 'abc'\n", {}, "server.port: Expected `int`, got `str`"),
        ("[server]\nport = 70000\n", {}, "server.port: Expected `int` <= 65535"),
        ("[server]\nworkers = 0\n", {}, "server.workers"),
        ("[server]\nprot = 1\n", {}, "server.prot: unknown setting"),
        ("[servr]\n", {}, "servr: unknown setting"),
        ("[server]\nmax_body_bytes = 10\n", {}, "server.max_body_bytes"),
        ("[[providers]]\nname = 'x'\ntype = 'azure'\n", {}, "providers[0] ('x').type: Invalid enum value 'azure'"),
        ("[[providers]]\ntype = 'openai'\n", {}, "providers[0]: Object missing required field `name`"),
        ("[[providers]]\nname = 'x'\ntype = 'openai'\nmodels = ['a']\n", {}, "providers[0] ('x').base_url: required"),
        (
            "[[providers]]\nname = 'x'\ntype = 'openai'\nbase_url = 'ftp://h'\nmodels = ['a']\n",
            {},
            "providers[0] ('x').base_url: expected an http:// or https:// URL",
        ),
        ("[[providers]]\nname = 'x'\ntype = 'openai'\nbase_url = 'http://h'\n", {}, "providers[0] ('x').models"),
        (
            (
                "[[providers]]\nname = 'x'\ntype = 'openai'\nbase_url = 'http://h'\napi_key_env = 'NOPE_KEY'\n"
                "models = ['a']\n"
            ),
            {},
            "providers[0] ('x').api_key_env: environment variable NOPE_KEY is not set",
        ),
        (
            "[[providers]]\nname = 'x'\ntype = 'mock'\nmodel = ['a']\n",
            {},
            "providers[0] ('x'): Object contains unknown field `model`",
        ),
        (
            "[[providers]]\nname = 'x'\ntype = 'mock'\n[[providers]]\nname = 'x'\ntype = 'mock'\n",
            {},
            "providers[1] ('x').name: duplicate provider name",
        ),
        ("[[providers]]\nname = 'x'\ntype = 'mock'\nread_timeout = -1\n", {}, "providers[0] ('x').read_timeout"),
        ("[server\n", {}, "invalid TOML"),
        ("", {"AGENTROUTER_PORT": "eighty"}, "server.port: Expected `int`, got `str` (from AGENTROUTER_PORT)"),
        ("", {"AGENTROUTER_WORKERS": "-1"}, "(from AGENTROUTER_WORKERS)"),
        ("", {"AGENTROUTER_MAX_BODY_BYTES": "1k"}, "server.max_body_bytes"),
        (
            "",
            {"AGENTROUTER_PROVIDERS__X__TYPE": "mock", "AGENTROUTER_PROVIDERS__X__READ_TIMEOUT": "soon"},
            (
                "providers[0] ('x').read_timeout: Expected `float`, got `str` "
                "(from AGENTROUTER_PROVIDERS__X__READ_TIMEOUT)"
            ),
        ),
        ("", {"AGENTROUTER_PROVIDERS__X__COLOUR": "red"}, "AGENTROUTER_PROVIDERS__X__COLOUR: expected"),
        (
            "",
            {"AGENTROUTER_PROVIDERS__X__BASE_URL": "http://h"},
            "providers[0] ('x'): Object missing required field `type`",
        ),
        # The request log and the monitor.
        ("[server]\nrequest_log_retention_days = 0\n", {}, "server.request_log_retention_days: Expected `float` > 0"),
        (
            "",
            {"AGENTROUTER_REQUEST_LOG_RETENTION_DAYS": "soon"},
            (
                "server.request_log_retention_days: Expected `float`, got `str` "
                "(from AGENTROUTER_REQUEST_LOG_RETENTION_DAYS)"
            ),
        ),
        (
            "",
            {"AGENTROUTER_REQUEST_LOG_RETENTION_DAYS": "inf"},
            (
                "server.request_log_retention_days: expected a finite number, got inf (from "
                "AGENTROUTER_REQUEST_LOG_RETENTION_DAYS)"
            ),
        ),
        ("", {"AGENTROUTER_MONITOR_INTERVAL": "nan"}, "server.monitor_interval"),
        (
            "",
            {"AGENTROUTER_MONITOR_INTERVAL": "0"},
            "server.monitor_interval: Expected `float` > 0.0 (from AGENTROUTER_MONITOR_INTERVAL)",
        ),
        ("[server]\nmonitor_enabled = 'maybe'\n", {}, "server.monitor_enabled: Expected `bool`, got `str`"),
        (
            "",
            {"AGENTROUTER_MONITOR_ENABLED": "maybe"},
            "server.monitor_enabled: Expected `bool`, got `str` (from AGENTROUTER_MONITOR_ENABLED)",
        ),
        ("[server]\nalert_webhook_url = 'ftp://x'\n", {}, "server.alert_webhook_url: expected an http:// or https://"),
        (
            "",
            {"AGENTROUTER_ALERT_WEBHOOK_URL": "hooks.example.test"},
            (
                "server.alert_webhook_url: expected an http:// or https:// URL, got 'hooks.example.test' (from "
                "AGENTROUTER_ALERT_WEBHOOK_URL)"
            ),
        ),
        ("", {"AGENTROUTER_ALERT_WEBHOOK_RETRIES": "50"}, "server.alert_webhook_retries: Expected `int` <= 20"),
        ("[monitor]\nfailure_rate = 2\n", {}, "monitor.failure_rate: Expected `float` <= 1.0"),
        ("[monitor]\nfailure_rat = 0.5\n", {}, "monitor.failure_rat: unknown setting"),
        ("monitor = 3\n", {}, "monitor: expected a table ([monitor])"),
        ("[server]\nmonitor = 3\n", {}, "server.monitor: unknown setting"),
        ("[server]\nvolume_factor = 3\n", {}, "server.volume_factor: unknown setting"),
        (
            "",
            {"AGENTROUTER_MONITOR_FAILURE_RATE": "2"},
            "monitor.failure_rate: Expected `float` <= 1.0 (from AGENTROUTER_MONITOR_FAILURE_RATE)",
        ),
        ("", {"AGENTROUTER_MONITOR_VOLUME_FACTOR": "1"}, "monitor.volume_factor: Expected `float` > 1.0"),
        ("", {"AGENTROUTER_MONITOR_NEW_IP_IPV4_PREFIX": "33"}, "monitor.new_ip_ipv4_prefix: Expected `int` <= 32"),
        ("", {"AGENTROUTER_MONITOR_VOLUME_SPIKE_COOLDOWN": "-inf"}, "monitor.volume_spike_cooldown"),
        ("", {"AGENTROUTER_MONITOR_FACTOR": "3"}, "AGENTROUTER_MONITOR_FACTOR: unknown setting"),
        ('[server]\nusage_writer = "thread"\n', {}, "server.usage_writer: Invalid enum value 'thread'"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, text), env=env)
    assert message in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="AGENTROUTER_CONFIG"):
        load_settings(env={"AGENTROUTER_CONFIG": str(tmp_path / "nope.toml"), "AGENTROUTER_PORT": "x"})


def test_serve_refuses_a_bad_config_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "[[providers]]\nname = 'p'\ntype = 'openai'\nmodels = ['gpt-4o']\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
    env["AGENTROUTER_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "agentrouter.cli", "serve", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "providers[0] ('p').base_url: required" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing started


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
        env["AGENTROUTER_DATA_DIR"] = str(tmp_path / "data")
        proc = subprocess.run(
            [sys.executable, "-m", "agentrouter.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr


def test_a_provider_ca_file_must_exist(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    body = (
        '[[providers]]\nname = "corp"\ntype = "openai"\nbase_url = "https://llm.corp.example/v1"\n'
        'api_key = "k"\nmodels = ["gpt-*"]\nca_file = "{}"\n'
    )
    cfg.write_text(body.format(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"providers\[0\] \('corp'\)\.ca_file: no such file"):
        load_settings(cfg, env={})
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cfg.write_text(body.format(tmp_path / "ca.pem"))
    assert load_settings(cfg, env={}).providers[0].ca_file == str(tmp_path / "ca.pem")


# -- every setting in Settings ----------------------------------------------------


def test_the_limiter_slots_and_the_secret_are_settings(tmp_path: Path) -> None:
    s = load_settings(env={"AGENTROUTER_LIMITER_SLOTS": "128", "AGENTROUTER_SECRET": "z" * 40})
    assert (s.limiter_slots, s.secret_bytes) == (128, b"z" * 40)
    assert load_settings(env={}).limiter_slots == 65536
    with pytest.raises(
        ConfigError, match=r"server\.limiter_slots: Expected `int` >= 1 \(from AGENTROUTER_LIMITER_SLOTS\)"
    ):
        load_settings(env={"AGENTROUTER_LIMITER_SLOTS": "0"})
    with pytest.raises(ConfigError, match=r"server\.limiter_slots"):
        load_settings(env={"AGENTROUTER_LIMITER_SLOTS": "many"})


async def test_the_core_is_built_from_the_settings_alone(tmp_path: Path) -> None:
    from agentrouter.core import Core

    settings = load_settings(
        env={
            "AGENTROUTER_DATA_DIR": str(tmp_path / "d"),
            "AGENTROUTER_LIMITER_SLOTS": "16",
            "AGENTROUTER_SECRET": "q" * 32,
        }
    )
    core = await Core.from_settings(settings)
    try:
        assert core.limiter.capacity == 16
        assert core.data_dir == tmp_path / "d"
        assert not (tmp_path / "d" / "secret").exists()  # the given secret, no file
    finally:
        await core.close()


def test_the_data_dir_is_expanded_and_defaulted_once() -> None:
    s = load_settings(env={"AGENTROUTER_DATA_DIR": "~/ar-data"})
    assert s.data_dir == str(Path.home() / "ar-data") and s.data_path == Path.home() / "ar-data"
    s = load_settings(env={}, overrides={"data_dir": "~/from-flag"})
    assert s.data_dir == str(Path.home() / "from-flag")
    assert load_settings(env={"XDG_DATA_HOME": "/srv/xdg"}).data_dir == "/srv/xdg/agentrouter"
    assert load_settings(env={}).data_dir == str(Path.home() / ".local" / "share" / "agentrouter")


def test_cors_origins_and_body_timeouts(tmp_path: Path) -> None:
    s = load_settings(env={"AGENTROUTER_CORS_ALLOW_ORIGINS": "https://App.example.com, http://localhost:5173"})
    assert s.cors_allow_origins == ("https://app.example.com", "http://localhost:5173")
    assert load_settings(write(tmp_path, '[server]\ncors_allow_origins = ["*"]\n'), env={}).cors_allow_origins == ("*",)
    assert load_settings(env={}).cors_allow_origins == ()
    for bad in ("https://app.example.com/", "app.example.com", "https://app.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError, match=r"server\.cors_allow_origins: .* is not an origin"):
            load_settings(env={"AGENTROUTER_CORS_ALLOW_ORIGINS": bad})
    s = load_settings(env={})
    assert (s.body_idle_timeout, s.body_timeout) == (30.0, 300.0)
    with pytest.raises(ConfigError, match=r"server\.body_idle_timeout: must not exceed body_timeout"):
        load_settings(env={"AGENTROUTER_BODY_IDLE_TIMEOUT": "60", "AGENTROUTER_BODY_TIMEOUT": "10"})
    with pytest.raises(ConfigError, match=r"server\.body_timeout"):
        load_settings(env={"AGENTROUTER_BODY_TIMEOUT": "0"})


def test_a_config_file_that_is_not_utf8_or_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path, env={})
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(path, env={})


def test_serve_honours_the_global_config_and_data_dir(tmp_path: Path) -> None:
    """``agentrouter --config X serve`` reads X, ``agentrouter --data-dir D serve`` uses D.
    The environment's port is busy, so a serve that ignored them fails fast instead."""
    import socket

    bad = write(tmp_path, "[[providers]]\nname = 'p'\ntype = 'openai'\nmodels = ['gpt-4o']\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTROUTER_")}
        env.update(AGENTROUTER_DATA_DIR=str(tmp_path / "data"), AGENTROUTER_PORT=str(busy.getsockname()[1]))

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "agentrouter.cli", *args]
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

        proc = run("--config", str(bad), "serve")
        assert proc.returncode == 2 and "providers[0] ('p').base_url: required" in proc.stderr, proc.stderr
        proc = run("--data-dir", str(blocker), "serve")
        assert proc.returncode == 1 and f"cannot use the data directory {blocker}" in proc.stderr, proc.stderr


def test_store_settings(tmp_path: Path) -> None:
    default = load_settings(env={"AGENTROUTER_DATA_DIR": str(tmp_path)})
    assert default.store_url is None and default.store_backend == "sqlite"
    assert default.sqlite_path == tmp_path / "agentrouter.db"
    assert (default.store_pool_min, default.store_pool_max, default.usage_buffer_records) == (1, 10, 100_000)
    other = load_settings(env={"AGENTROUTER_STORE_URL": f"sqlite://{tmp_path}/other.db"})
    assert other.store_backend == "sqlite" and other.sqlite_path == tmp_path / "other.db"
    pg = load_settings(
        env={
            "AGENTROUTER_STORE_URL": "postgresql://app:s3cret@db.internal:5432/agentrouter?password=also&sslmode=require",
            "AGENTROUTER_STORE_POOL_MAX": "4",
        }
    )
    assert pg.store_backend == "postgresql" and pg.store_pool_max == 4
    assert "s3cret" not in repr(pg) and "also" not in repr(pg)
    assert "postgresql://app:***@db.internal:5432/agentrouter?password=***&sslmode=require" in repr(pg)
    assert load_settings(env={"AGENTROUTER_STORE_URL": ""}).store_url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AGENTROUTER_STORE_URL": "mysql://u:pw@h/db"},
            r"store_url: 'mysql://u:\*\*\*@h/db' is not",
        ),
        ({"AGENTROUTER_STORE_URL": "postgresql:///db"}, "names no host"),
        ({"AGENTROUTER_STORE_URL": "postgresql://u:pw@h:99999/db"}, "is not a valid URL"),
        ({"AGENTROUTER_STORE_POOL_MIN": "5", "AGENTROUTER_STORE_POOL_MAX": "2"}, "must not exceed store_pool_max"),
        ({"AGENTROUTER_USAGE_BUFFER_RECORDS": "0"}, "usage_buffer_records"),
    ],
)
def test_bad_store_settings_name_the_field_and_hide_the_password(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        load_settings(env=env)
    assert ":pw@" not in str(exc.value)
