"""The alert webhook against a real HTTP server on 127.0.0.1: retries on 5xx then
success, retries on a timeout, no retry on a 4xx, the JSON document sent."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pytest

from agentrouter.monitor.webhook import WebhookSender, alert_event
from agentrouter.store.models import AlertRow, KeyRow

HOLD = math.inf
"""A receiver step's delay that holds the answer until the receiver closes."""


class Receiver:
    """A scripted webhook receiver: each POST takes the next (status, delay) step; a
    delay of ``HOLD`` answers only when the receiver closes."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []
        self.received: list[tuple[float, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append((time.monotonic(), dict(self.headers), json.loads(body)))
                    status, delay = receiver.steps.pop(0) if receiver.steps else (200, 0.0)
                if delay == HOLD:
                    receiver._closing.wait(60)
                elif delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


ALERT = AlertRow(
    id="alr_0123456789abcdef",
    key_id="key_0123456789abcdef",
    kind="new_ip",
    subject="192.0.2.99",
    evidence={"ip": "192.0.2.99", "known_networks": 2},
    created_at=1_700_000_000.0,
)
KEY = KeyRow(
    id="key_0123456789abcdef",
    name="prod",
    prefix="sk-ar-abcdefgh…",
    created_at=1.0,
    requests=None,
    interval=None,
    metadata={},
    expires_at=None,
    state="active",
    scope="inference",
    owner=None,
    slot=0,
    tag=1,
)


async def test_success_sends_the_alert_document(receiver: Receiver) -> None:
    sender = WebhookSender(receiver.url, timeout=2.0, retries=3, backoff=0.01)
    try:
        assert await sender.send(alert_event(ALERT, KEY)) is True
    finally:
        await sender.aclose()
    [(_, headers, body)] = receiver.received
    assert headers["content-type"] == "application/json"
    assert body == {
        "type": "agentrouter.alert",
        "alert": {
            "id": ALERT.id,
            "key_id": KEY.id,
            "kind": "new_ip",
            "subject": "192.0.2.99",
            "evidence": {"ip": "192.0.2.99", "known_networks": 2},
            "created_at": 1_700_000_000.0,
            "acknowledged_at": None,
        },
        "key": {"id": KEY.id, "name": "prod", "prefix": "sk-ar-abcdefgh…"},
    }


async def test_retries_on_500_with_backoff_then_succeeds(receiver: Receiver) -> None:
    receiver.steps = [(500, 0.0), (503, 0.0), (200, 0.0)]
    sender = WebhookSender(receiver.url, timeout=2.0, retries=3, backoff=0.1)
    try:
        assert await sender.send(alert_event(ALERT, KEY)) is True
    finally:
        await sender.aclose()
    times = [t for t, _, _ in receiver.received]
    assert len(times) == 3
    # Exponential backoff: about 0.1 s, then about 0.2 s.
    assert times[1] - times[0] >= 0.09
    assert times[2] - times[1] >= 0.19


async def test_gives_up_after_the_retries(receiver: Receiver) -> None:
    receiver.steps = [(500, 0.0)] * 10
    sender = WebhookSender(receiver.url, timeout=2.0, retries=2, backoff=0.01)
    try:
        assert await sender.send(alert_event(ALERT, None)) is False
    finally:
        await sender.aclose()
    assert len(receiver.received) == 3  # one try and two retries


async def test_a_4xx_answer_is_final(receiver: Receiver) -> None:
    receiver.steps = [(400, 0.0), (200, 0.0)]
    sender = WebhookSender(receiver.url, timeout=2.0, retries=3, backoff=0.01)
    try:
        assert await sender.send(alert_event(ALERT, KEY)) is False
    finally:
        await sender.aclose()
    assert len(receiver.received) == 1


async def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    # The first attempt gets no answer while the test runs: the send can only succeed
    # if that attempt was cut at the timeout and retried.
    receiver.steps = [(200, HOLD), (200, 0.0)]
    sender = WebhookSender(receiver.url, timeout=0.3, retries=2, backoff=0.01)
    try:
        assert await asyncio.wait_for(sender.send(alert_event(ALERT, KEY)), 20) is True
    finally:
        await sender.aclose()
    assert len(receiver.received) == 2


async def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sender = WebhookSender(f"http://127.0.0.1:{port}/hook", timeout=1.0, retries=3, backoff=0.5, sleep=sleep)
    try:
        assert await sender.send(alert_event(ALERT, KEY)) is False
    finally:
        await sender.aclose()
    assert slept == [0.5, 1.0, 2.0]
