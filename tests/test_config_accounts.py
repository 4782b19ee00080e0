"""The accounts settings: ``public_url``, ``[accounts]``, ``[smtp]``, ``[oauth.*]`` from
the file and the environment, validated with messages that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentrouter.config import ConfigError, load_settings

FILE = """
[server]
public_url = "https://gateway.example.com/"

[accounts]
registration = "domains"
registration_domains = ["Example.com", "@corp.example"]
session_days = 14

[smtp]
host = "smtp.example.com"
security = "tls"
user = "mailer"
password_env = "TEST_SMTP_PASSWORD"
sender = "AgentRouter <noreply@example.com>"

[oauth.github]
client_id = "gh-id"
client_secret_env = "TEST_GH_SECRET"
authorize_url = "http://127.0.0.1:9999/login/oauth/authorize"

[oauth.google]
client_id = ""
"""


def test_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(FILE)
    s = load_settings(
        path,
        env={
            "TEST_SMTP_PASSWORD": "pw",
            "TEST_GH_SECRET": "ghs",
            "AGENTROUTER_ACCOUNTS_SIGNIN_IP_ATTEMPTS": "7",
            "AGENTROUTER_SMTP_PORT": "2465",
        },
    )
    assert s.base_url == "https://gateway.example.com" and s.https
    assert s.accounts.registration == "domains"
    assert s.accounts.registration_domains == ("example.com", "corp.example")
    assert s.accounts.session_days == 14 and s.accounts.signin_ip_attempts == 7
    assert (s.smtp.host, s.smtp.effective_port, s.smtp.security, s.smtp.password) == (
        "smtp.example.com",
        2465,
        "tls",
        "pw",
    )
    gh = s.oauth.provider("github")
    assert gh is not None and gh.client_secret == "ghs"
    assert gh.authorize_url == "http://127.0.0.1:9999/login/oauth/authorize"
    assert gh.access_token_url == "https://github.com/login/oauth/access_token"  # the default
    assert s.oauth.provider("google") is None and s.oauth.offered == ("github",)
    # Secrets stay out of reprs (and so out of logs).
    for text in (repr(s), repr(s.smtp), repr(s.oauth)):
        assert "pw'" not in text and "ghs" not in text


def test_defaults() -> None:
    s = load_settings(env={})
    assert s.accounts.registration == "invite" and s.accounts.session_days == 30
    assert s.smtp.host is None and s.oauth.offered == ()
    assert s.base_url == "http://127.0.0.1:8080" and not s.https
    assert load_settings(env={"AGENTROUTER_HOST": "0.0.0.0", "AGENTROUTER_PORT": "9"}).base_url == "http://127.0.0.1:9"
    assert load_settings(env={"AGENTROUTER_HOST": "::1"}).base_url == "http://[::1]:8080"
    env = {"AGENTROUTER_OAUTH_GOOGLE_CLIENT_ID": "g", "AGENTROUTER_OAUTH_GOOGLE_CLIENT_SECRET": "s"}
    google = load_settings(env=env).oauth.provider("google")
    assert google is not None
    assert google.server_metadata_url == "https://accounts.google.com/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTROUTER_ACCOUNTS_REGISTRATION": "anyone"}, "accounts.registration"),
        ({"AGENTROUTER_ACCOUNTS_REGISTRATION": "domains"}, "needs registration_domains"),
        ({"AGENTROUTER_ACCOUNTS_REGISTRATION_DOMAINS": "not a domain"}, "is not an email domain"),
        ({"AGENTROUTER_ACCOUNTS_SESSION_DAYS": "0"}, "accounts.session_days"),
        ({"AGENTROUTER_ACCOUNTS_SESSION_DAYS": "inf"}, "accounts.session_days: expected a finite number"),
        ({"AGENTROUTER_ACCOUNTS_PASSWORD_MEMORY_KIB": "1024"}, "accounts.password_memory_kib"),
        ({"AGENTROUTER_ACCOUNTS_NOPE": "1"}, "AGENTROUTER_ACCOUNTS_NOPE: unknown setting"),
        ({"AGENTROUTER_SMTP_SECURITY": "ssl"}, "smtp.security"),
        ({"AGENTROUTER_SMTP_PASSWORD_ENV": "UNSET_VAR_X"}, "smtp.password_env: environment variable UNSET_VAR_X"),
        ({"AGENTROUTER_SMTP_PASSWORD": "p"}, "smtp.user: a password needs a user"),
        ({"AGENTROUTER_SMTP_SENDER": "nobody"}, "smtp.sender"),
        ({"AGENTROUTER_SMTP_CA_FILE": "/nonexistent.pem"}, "smtp.ca_file: no such file"),
        ({"AGENTROUTER_OAUTH_GITHUB_CLIENT_ID": "x"}, "oauth.github.client_secret: required"),
        ({"AGENTROUTER_OAUTH_GITLAB_CLIENT_ID": "x"}, "AGENTROUTER_OAUTH_<PROVIDER>_<NAME>"),
        (
            {"AGENTROUTER_OAUTH_GOOGLE_AUTHORIZE_URL": "https://x"},
            "oauth.google.authorize_url: not a setting of google",
        ),
        ({"AGENTROUTER_PUBLIC_URL": "gateway.example.com"}, "server.public_url"),
        ({"AGENTROUTER_PUBLIC_URL": "https://x.example/?q=1"}, "server.public_url"),
    ],
)
def test_bad_settings_name_the_field(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    assert message in str(err.value)


def test_bad_tables_in_the_file(tmp_path: Path) -> None:
    for text, message in (
        ("[oauth.gitlab]\nclient_id = 'x'\n", "oauth.gitlab: unknown provider"),
        ("[smtp]\nhostname = 'x'\n", "smtp.hostname: unknown setting"),
        ("[accounts]\nsessions = 3\n", "accounts.sessions: unknown setting"),
        ("accounts = 3\n", "accounts: expected a table"),
    ):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_settings(path, env={})
