"""A hung test fails with its stack: pytest-timeout (``timeout`` in pyproject.toml).

Its "signal" method (SIGALRM, the suite's default) fails only the hung test and the
run goes on to its summary, but it cannot stop a test hung on uvloop: the exception
its handler raises is taken by a uvloop callback and the loop waits on. Tests that
run on uvloop use the "thread" method instead, which prints the stack of every thread
and then ends the run. A plugin of its own (registered in ``tests/conftest.py``) so
``tests/test_timeouts.py`` can load it into a run of hanging tests.
"""

from __future__ import annotations

import pytest
import uvloop


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("_asyncio_loop_factory") is not uvloop.new_event_loop:
            continue
        own = item.get_closest_marker("timeout")
        kwargs = dict(own.kwargs) if own is not None else {}
        kwargs["method"] = "thread"
        item.add_marker(pytest.mark.timeout(*(own.args[:1] if own is not None else ()), **kwargs), append=False)
