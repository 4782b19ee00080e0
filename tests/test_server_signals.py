"""The workaround for Granian's second termination signal (``server._signal_workers_once``).

A worker that gets two termination signals (Ctrl-C to the process group, then the
parent's SIGTERM) must pass only the first to Granian's ``WorkerSignal``: a second
``set()`` can block the worker for good. These tests drive the handler that
``load_app`` installs with a fake event loop, so they need no signals and no timing;
``test_gateway_server.py`` sends the real pair to a real server.
"""

from __future__ import annotations

import logging
import signal
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import granian._signals
import pytest

from agentrouter import server
from tests.gateway_fixtures import settings_for


class CountingSignal:
    """Stands in for Granian's ``WorkerSignal``: counts ``set()`` (the real one can
    block on a second call, which would hang the test instead of failing it)."""

    made: ClassVar[list[CountingSignal]] = []

    def __init__(self) -> None:
        self.sets = 0
        CountingSignal.made.append(self)

    def set(self) -> None:
        self.sets += 1

    def add_cb(self, cb: Any) -> None:
        pass


class FakeLoop:
    """Records ``add_signal_handler`` calls, as asyncio's and uvloop's loops take them."""

    def __init__(self) -> None:
        self.handlers: dict[int, tuple[Callable[..., None], tuple[Any, ...]]] = {}

    def add_signal_handler(self, sig: int, callback: Callable[..., None], *args: Any) -> None:
        self.handlers[sig] = (callback, args)

    def deliver(self, sig: int) -> None:
        callback, args = self.handlers[sig]
        callback(*args)


@pytest.fixture
def granian_signals(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Granian's real ``_signals`` module as Granian made it (an earlier test in this
    process may have loaded the app, which patches it), with a counting
    ``WorkerSignal``; everything is put back afterwards."""
    CountingSignal.made.clear()
    current = granian._signals.set_loop_signals
    monkeypatch.setattr(granian._signals, "set_loop_signals", getattr(current, "agentrouter_replaces", current))
    monkeypatch.setattr(granian._signals, "WorkerSignal", CountingSignal)
    return granian._signals


def test_load_app_installs_the_once_only_handler(granian_signals: types.ModuleType, tmp_path: Path) -> None:
    original = granian_signals.set_loop_signals
    assert not getattr(original, "agentrouter_once", False)

    server.load_app(settings_for(tmp_path / "data"))

    installed = granian_signals.set_loop_signals
    assert installed is not original and installed.agentrouter_once and installed.agentrouter_replaces is original
    loop = FakeLoop()
    event = installed(loop)
    # Granian's own signals, each handled with (signum, frame) as Granian passes them.
    assert sorted(loop.handlers) == sorted([signal.SIGINT, signal.SIGTERM])
    assert all(args == (sig, None) for sig, (_, args) in loop.handlers.items())

    loop.deliver(signal.SIGINT)  # Ctrl-C to the process group
    loop.deliver(signal.SIGTERM)  # then the parent's SIGTERM
    loop.deliver(signal.SIGTERM)
    assert CountingSignal.made == [event] and event.sets == 1

    # A second worker start (or a second load) installs nothing more.
    server.load_app(settings_for(tmp_path / "data"))
    assert granian_signals.set_loop_signals is installed


def test_each_worker_start_gets_its_own_event(granian_signals: types.ModuleType) -> None:
    assert server._signal_workers_once(granian_signals)
    first_loop, second_loop = FakeLoop(), FakeLoop()
    first = granian_signals.set_loop_signals(first_loop)
    second = granian_signals.set_loop_signals(second_loop)
    first_loop.deliver(signal.SIGTERM)
    second_loop.deliver(signal.SIGINT)
    second_loop.deliver(signal.SIGTERM)
    assert (first.sets, second.sets) == (1, 1)


def test_without_loop_signal_support_the_process_handlers_fire_once(
    granian_signals: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop without ``add_signal_handler`` (Granian then uses ``signal.signal``)."""

    class NoSignalsLoop:
        def add_signal_handler(self, sig: int, callback: Callable[..., None], *args: Any) -> None:
            raise NotImplementedError

    installed: dict[int, Callable[[int, Any], None]] = {}
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.__setitem__(sig, handler))
    assert server._signal_workers_once(granian_signals)
    event = granian_signals.set_loop_signals(NoSignalsLoop())
    assert sorted(installed) == sorted([signal.SIGINT, signal.SIGTERM])
    installed[signal.SIGINT](signal.SIGINT, None)
    installed[signal.SIGTERM](signal.SIGTERM, None)
    assert event.sets == 1


def stand_in(**attributes: Any) -> types.ModuleType:
    """A ``granian._signals`` as this version knows it, with ``attributes`` changed
    (``None`` removes one)."""
    module = types.ModuleType("granian._signals")

    def set_loop_signals(loop: Any) -> Any:
        return CountingSignal()

    known: dict[str, Any] = {
        "set_loop_signals": set_loop_signals,
        "_get_signals": lambda: [signal.SIGINT, signal.SIGTERM],
        "WorkerSignal": CountingSignal,
    }
    for name, value in {**known, **attributes}.items():
        if value is not None:
            setattr(module, name, value)
    return module


def test_a_stand_in_of_the_known_shape_is_patched() -> None:
    """The refusals below are refusals of a changed shape, not of a stand-in."""
    module = stand_in()
    assert server._signal_workers_once(module)
    assert module.set_loop_signals.agentrouter_once


@pytest.mark.parametrize(
    "changed",
    [
        {"set_loop_signals": None},
        {"set_loop_signals": lambda loop, extra: None},
        {"set_loop_signals": lambda: None},
        {"_get_signals": None},
        {"_get_signals": lambda sigs: sigs},
        {"WorkerSignal": None},
        {"WorkerSignal": type("WorkerSignal", (), {})},
        {"WorkerSignal": CountingSignal()},
    ],
    ids=[
        "no-set_loop_signals",
        "set_loop_signals-takes-two",
        "set_loop_signals-takes-none",
        "no-_get_signals",
        "_get_signals-takes-one",
        "no-WorkerSignal",
        "WorkerSignal-without-set",
        "WorkerSignal-not-a-class",
    ],
)
def test_changed_granian_internals_are_left_alone(changed: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    module = stand_in(**changed)
    before = dict(vars(module))
    with caplog.at_level(logging.WARNING, logger="agentrouter.server"):
        assert server._signal_workers_once(module) is False
    assert dict(vars(module)) == before
    assert "second termination signal may hang a worker" in caplog.text


def test_granian_starts_its_workers_through_the_patched_name() -> None:
    """The patch works because Granian's worker targets look the function up in
    ``granian._signals`` when the worker starts (after the loader ran), not at import."""
    import inspect

    import granian.server.mp as mp

    source = inspect.getsource(mp)
    assert "from granian._signals import set_loop_signals" in source
    assert "set_loop_signals" not in vars(mp)
