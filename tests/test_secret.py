import stat
from pathlib import Path

import pytest

from agentrouter.secret import SecretError, load_secret


def test_created_once_private_and_stable(tmp_path: Path) -> None:
    first = load_secret(tmp_path, env={})
    assert len(first) >= 32
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert load_secret(tmp_path, env={}) == first


def test_environment_secret_wins_and_must_be_long(tmp_path: Path) -> None:
    assert load_secret(tmp_path, env={"AGENTROUTER_SECRET": "x" * 32}) == b"x" * 32
    assert not (tmp_path / "secret").exists()
    with pytest.raises(SecretError, match="at least 32 bytes"):
        load_secret(tmp_path, env={"AGENTROUTER_SECRET": "short"})


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_secret(tmp_path, env={})
    (tmp_path / "secret").chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(tmp_path, env={})
