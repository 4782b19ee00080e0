"""The README tells a newcomer the truth: its limiter example runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_limiter_example_runs_and_refuses_the_fourth_request() -> None:
    (example,) = [b for b in _python_blocks() if "agentrouter.limiter" in b]
    # It must run without the gateway: block the gateway's modules from importing.
    guard = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[:2] in (['agentrouter', 'gateway'], ['agentrouter', 'store'],"
        " ['agentrouter', 'api']):\n"
        "            raise ImportError(f'the limiter example imported {name}')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", guard + example], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert [line.split(":")[1].split(",")[0].strip() for line in out] == [
        "allowed",
        "allowed",
        "allowed",
        "refused (rate_limited)",
    ]
    assert "2 left" in out[0] and "0 left" in out[2]
    assert re.search(r"retry in (19|20)\.\ds", out[3])


def test_the_two_commands_exist() -> None:
    text = README.read_text()
    for script in ("scripts/serve", "scripts/test"):
        assert f"\n{script}\n" in text
        assert (README.parent / script).stat().st_mode & 0o111
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_the_checks_command_exists_and_ci_runs_it_before_the_tests() -> None:
    assert "\nscripts/check\n" in README.read_text()
    assert (README.parent / "scripts/check").stat().st_mode & 0o111
    ci = (README.parent / ".ci" / "run").read_text()
    # The gates first, so that the last line of CI's output is pytest's summary.
    assert ci.index("scripts/check") < ci.index("scripts/test")
