"""The suite's hang guard: pytest-timeout as configured in pyproject.toml, with
``tests.hang_guard`` choosing its method. A hung test fails with a stack: on
asyncio's loop and in plain tests only that test fails and the run goes on to its
summary; on uvloop (which SIGALRM cannot interrupt) the run ends with every stack."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = textwrap.dedent("""
    import asyncio

    import uvloop

    pytest_plugins = ["tests.hang_guard"]


    def pytest_asyncio_loop_factories(config, item):
        # As tests/conftest.py does for the modules that run on both loops.
        factories = {"asyncio": asyncio.new_event_loop}
        if item.module.__name__ == "test_both_loops":
            factories["uvloop"] = uvloop.new_event_loop
        return factories
""")

ONE_LOOP = textwrap.dedent("""
    import asyncio
    import threading


    def test_blocked_thread():
        threading.Event().wait()  # HANG-SYNC


    async def test_blocked_coroutine():
        await asyncio.Event().wait()


    def test_after_the_hangs():
        pass
""")

BOTH_LOOPS = textwrap.dedent("""
    import asyncio


    async def test_blocked_coroutine():
        await asyncio.Event().wait()
""")


def run_pytest(directory: Path, module: str) -> tuple[int, str]:
    """pytest on ``module`` with the project's configuration and a 1 s timeout."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(directory),
            "-p",
            "no:cacheprovider",
            "--timeout",
            "1",
            "-q",
            str(directory / module),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def hanging(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_one_loop.py").write_text(ONE_LOOP)
    (tmp_path / "test_both_loops.py").write_text(BOTH_LOOPS)
    return tmp_path


@pytest.mark.slow
def test_a_hung_test_fails_with_its_stack_and_the_run_goes_on(hanging: Path) -> None:
    code, out = run_pytest(hanging, "test_one_loop.py")
    assert code == 1, out
    assert "HANG-SYNC" in out, out  # the stack shows where the thread is blocked
    for test in ("test_blocked_thread", "test_blocked_coroutine"):
        assert f"FAILED test_one_loop.py::{test} - Failed: Timeout (>1.0s)" in out, out
    assert out.rstrip().splitlines()[-1].startswith("2 failed, 1 passed"), out


@pytest.mark.slow
def test_a_test_hung_on_uvloop_ends_the_run_with_every_stack(hanging: Path) -> None:
    code, out = run_pytest(hanging, "test_both_loops.py")
    # The asyncio run of the test failed alone (F); the uvloop run then ended pytest,
    # with the stack of each thread.
    assert code != 0, out
    assert out.startswith("F+++") and "+ Timeout +" in out, out
    assert "Stack of MainThread" in out and "run_until_complete" in out, out
