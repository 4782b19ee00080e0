import stat
from pathlib import Path

import pytest

from agentrouter.config import ConfigError, load_settings
from agentrouter.secret import SecretError, load_secret


def test_created_once_private_and_stable(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    assert len(first) >= 32
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert load_secret(tmp_path) == first


def test_a_given_secret_wins_and_must_be_long(tmp_path: Path) -> None:
    assert load_secret(tmp_path, b"x" * 32) == b"x" * 32
    assert not (tmp_path / "secret").exists()
    with pytest.raises(SecretError, match="at least 32 bytes"):
        load_secret(tmp_path, b"short")


def test_the_environment_secret_is_a_setting_checked_there(tmp_path: Path) -> None:
    settings = load_settings(env={"AGENTROUTER_SECRET": "y" * 32})
    assert settings.secret_bytes == b"y" * 32
    assert "y" * 32 not in repr(settings)
    with pytest.raises(
        ConfigError, match=r"server\.secret: must be at least 32 bytes long \(from AGENTROUTER_SECRET\)"
    ):
        load_settings(env={"AGENTROUTER_SECRET": "short"})
    assert load_settings(env={}).secret_bytes is None


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_secret(tmp_path)
    (tmp_path / "secret").chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(tmp_path)
