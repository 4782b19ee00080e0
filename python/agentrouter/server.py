"""Serve the gateway with Granian: ASGI, N worker processes, one shared socket.

``serve(settings)`` runs in the parent process:

1. opens the core once (creates the data directory, the server secret, the database
   and its migrations, and the shared limiter region) so that workers never race to
   create them, then closes it, and removes the metrics snapshot files that workers
   of an earlier run left (``gateway.metrics.snapshot``); while there is no user it
   prints the first admin's one-time setup link;
2. starts Granian's process manager with an in-process target loader: each worker
   builds the gateway from the same frozen settings (nothing is passed through the
   environment), with the management API mounted under ``/api`` and the web console
   for every other path outside ``/v1`` (``load_app``). Each worker's API starts the
   monitor's task; a lease in the store lets one process of the server do the
   monitor's work at a time;
3. blocks until SIGTERM / SIGINT.

What happens on SIGTERM (Granian 2.x): the parent stops accepting and signals the
workers; each worker stops accepting, finishes its in-flight requests, then sends the
app ``lifespan.shutdown``, where the app hands the usage it gathered to its usage
writer process, waits for that to exit, and closes its pools and the store. The app
bounds the drain itself (``shutdown_timeout`` from the signal, then it cancels what
is left); the parent's ``workers_kill_timeout`` is set a little longer, as the last
resort for a worker that hangs.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib
import inspect
import logging
import math
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from agentrouter.config import Settings

__all__ = ["load_app", "prepare", "serve"]

log = logging.getLogger("agentrouter.server")

KILL_MARGIN = 10
"""Seconds the parent waits past ``shutdown_timeout`` before killing a worker."""


def load_app(settings: Settings) -> Any:
    """Granian's target loader, called in each worker process: the gateway, with the
    management API (``/api``) and the web console (every other path outside ``/v1``)
    as its fallback app (``agentrouter.console.site``). The gateway's lifespan calls
    their ``startup(core)`` once its core is open and their ``shutdown()`` before
    closing it."""
    from agentrouter.console import build_site
    from agentrouter.gateway.app import create_app

    _signal_workers_once()
    return create_app(settings, fallback=build_site(settings))


def _signal_workers_once(signals: ModuleType | None = None) -> bool:
    """Make a worker's termination signal reach Granian once, however many arrive.

    A worker often gets two: Ctrl-C reaches the whole process group, then the parent
    sends SIGTERM; systemd signals every process of the unit. Granian (2.8) calls
    ``WorkerSignal.set()`` from its loop signal handler for each, and a second call
    can block the worker's main thread for good: seen with py-spy in about 1 stop in
    10 to 20, blocked in ``WorkerSignal.set`` and never exiting; outside a worker a
    second ``set()`` on one ``WorkerSignal`` blocks every time. Upstream, the same
    family of hang (the worker's main thread and a runtime thread waiting on each
    other at shutdown) is granian issue #875, "Worker hangs forever on SIGTERM when
    the event loop is busy" (https://github.com/emmett-framework/granian/issues/875,
    proposed fix in PR #876); ``pyproject.toml`` pins Granian to the 2.8 series this
    was checked against.

    The loader runs in the worker before Granian installs that handler (Granian
    imports ``granian._signals.set_loop_signals`` when it starts the worker), so this
    replaces it with the same function whose handler sets the event only the first
    time. If Granian's internals are not what this expects, nothing is replaced and a
    warning says so. Returns whether the once-only version is in place.

    ``signals`` is ``granian._signals`` (a stand-in in tests).
    """
    if signals is None:
        try:
            signals = importlib.import_module("granian._signals")
        except ImportError:
            return False
    original = getattr(signals, "set_loop_signals", None)
    if getattr(original, "agentrouter_once", False):
        return True
    worker_signal = getattr(signals, "WorkerSignal", None)
    found_signals = getattr(signals, "_get_signals", None)
    if not (
        callable(original)
        and _parameters(original) == ["loop"]
        and callable(found_signals)
        and _parameters(found_signals) == []
        and isinstance(worker_signal, type)
        and callable(getattr(worker_signal, "set", None))
    ):
        log.warning(
            "Granian's worker signal handling is not the one this version knows; a second "
            "termination signal may hang a worker (the once-only handler is not installed)"
        )
        return False
    get_signals: Callable[[], Iterable[int]] = found_signals
    new_event: Callable[[], Any] = worker_signal

    def set_loop_signals(loop: Any) -> Any:
        event = new_event()
        fired = False

        def handler(signum: int, frame: Any) -> None:
            nonlocal fired
            if not fired:
                fired = True
                event.set()

        sigs = list(get_signals())
        try:
            for sig in sigs:
                loop.add_signal_handler(sig, handler, sig, None)
        except NotImplementedError:
            for sig in sigs:
                signal.signal(sig, handler)
        return event

    # Attributes that mypy cannot see: a marker on the function (with the function it
    # replaces, for tests and debugging), and Granian's module.
    set_loop_signals.agentrouter_once = True  # type: ignore[attr-defined]
    set_loop_signals.agentrouter_replaces = original  # type: ignore[attr-defined]
    signals.set_loop_signals = set_loop_signals  # type: ignore[attr-defined]
    return True


def _parameters(function: Callable[..., Any]) -> list[str] | None:
    """The parameter names of ``function``, or None when they cannot be read."""
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


async def _prepare(settings: Settings) -> str | None:
    from agentrouter.core import Core
    from agentrouter.gateway.metrics import clear_stale

    core = await Core.from_settings(settings)
    try:
        link = await core.accounts.prepare_setup()
    finally:
        await core.close()
    # The metrics snapshots of workers of an earlier run (those of a server still
    # running on this data directory are left alone).
    clear_stale(settings.data_path / "metrics")
    return link


SETUP_NOTICE = (
    "No account exists yet. Create the first admin account here (the link works once, "
    "until the server restarts; or run: agentrouter users create --email EMAIL --admin):\n\n    {link}\n"
)


def prepare(settings: Settings) -> None:
    """Create or migrate everything the workers open (see the module docstring); with
    no user yet, print the one-time setup link of the first admin (a new one at each
    start: the previous one stops working)."""
    link = asyncio.run(_prepare(settings))
    if link is not None:
        print(SETUP_NOTICE.format(link=link), file=sys.stderr, flush=True)


def _log_config(level: str) -> dict[str, Any]:
    from granian.log import LOGGING_CONFIG

    loggers: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG["loggers"])  # type: ignore[arg-type]
    name = "WARNING" if level in ("warn", "warning") else level.upper()
    loggers["agentrouter"] = {"handlers": ["console"], "level": name, "propagate": False}
    return {"loggers": loggers}


def check_address(host: str, port: int) -> None:
    """Fail if something already listens on the address.

    Granian's workers bind with ``SO_REUSEPORT``: a second server on the same port
    would start and silently share the traffic. A plain bind tells the truth first.
    """
    if port == 0:
        return
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None


def event_loop() -> Any:
    """uvloop where it is installed (a dependency on every platform it supports),
    else asyncio's loop. Never Granian's "auto", which would pick any loop package
    that happens to be installed."""
    from granian.constants import Loops

    try:
        import uvloop  # noqa: F401
    except ImportError:
        return Loops.asyncio
    return Loops.uvloop


def serve(settings: Settings) -> None:
    """Run the gateway until a termination signal; raises on a failed start."""
    from granian.constants import HTTPModes, Interfaces, RuntimeModes
    from granian.log import LogLevels
    from granian.server import Server

    prepare(settings)  # first: a data directory that cannot be used is the message to give
    check_address(settings.host, settings.port)
    server = Server(
        "agentrouter.gateway.app:create_app",  # shown in the process title; loading uses load_app
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.effective_workers,
        http=HTTPModes.auto,
        websockets=False,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=_log_config(settings.log_level),
        log_access=settings.access_log,
        workers_kill_timeout=math.ceil(settings.shutdown_timeout) + KILL_MARGIN,
        # One Rust I/O thread per worker beside its Python thread (Granian's "st"
        # runtime), on uvloop: in interleaved load-benchmark runs about 12% less CPU
        # per request and 20-45 us less added p50 than Granian's defaults for ASGI
        # ("mt", asyncio's loop). Workers scale over the cores. A worker on either
        # runtime could hang on a second termination signal: _signal_workers_once.
        runtime_mode=RuntimeModes.st,
        loop=event_loop(),
    )
    server.serve(target_loader=functools.partial(load_app, settings), wrap_loader=False)
