"""The stub ``_core.pyi`` must describe the built module exactly."""

import subprocess
import sys


def test_stub_matches_the_built_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "agentrouter._core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
