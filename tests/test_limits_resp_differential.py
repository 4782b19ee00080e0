"""The hand-written RESP2 reply parser of ``agentrouter.limits.resp`` against the one
people trust: redis-py's own pure-Python parser (``_RESP2Parser``, what redis-py
uses without hiredis, reading from a socket), on hypothesis-generated replies.

* Valid streams (any nesting of integers, bulk strings holding any bytes, nulls,
  simple strings, errors, arrays), delivered to the connection's ``data_received``
  in pieces cut at arbitrary points: the same values as redis-py, in order, and a
  stream cut short waits for the rest.
* Arbitrary byte streams built from RESP's own pieces (type bytes, digits, -1, -2,
  CRLF, stray bytes), cut anywhere: the same values and the same end (refused,
  waiting for more, or complete), except one place where ours is stricter on what
  no server sends: a length below -1, which redis-py reads as garbage (``$-2`` an
  empty string, ``*-2`` an empty array) and ours refuses (found by this test;
  ours read it as a null before).

Outside the comparison: a bare LF or CR inside a line (no server sends one; a
simple string cannot hold it). redis-py's line reader then waits for more bytes from
the socket even when its buffer holds the rest, so it has no answer to compare with.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis._parsers.resp2 import _RESP2Parser
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR
from redis.exceptions import ConnectionError, ResponseError

from agentrouter.limits.resp import _Protocol

# ------------------------------------------------------------------ the two parsers


def ours(chunks: list[bytes], expect: int) -> tuple[list[Any], str]:
    """Feed ``chunks`` to the real protocol object with ``expect`` calls waiting;
    (the replies it resolved, "refused" | "incomplete" | "complete")."""
    loop = asyncio.new_event_loop()
    try:
        protocol = _Protocol(timeout=60.0)
        futures = [loop.create_future() for _ in range(expect)]
        protocol.pending.extend((f, 0.0) for f in futures)
        for chunk in chunks:
            protocol.data_received(chunk)
            if protocol.failed is not None:
                break
        values = [f.result() for f in futures if f.done() and not f.cancelled() and f.exception() is None]
        if protocol.failed is not None:
            state = "refused"
        else:
            state = "incomplete" if protocol.buf else "complete"
        for f in futures:
            if f.done() and not f.cancelled():
                f.exception()  # retrieved
        return [normal(v) for v in values], state
    finally:
        loop.close()


class _Conn:
    """What ``on_connect`` reads from a redis-py connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.socket_timeout = 5.0
        self.encoder = Encoder("utf-8", "strict", False)


def theirs(data: bytes, expect: int) -> tuple[list[Any], str]:
    """redis-py's parser reading ``data`` from a socket closed after it, up to
    ``expect`` replies: (the replies, "refused" | "incomplete" | "complete")."""
    reading, writing = socket.socketpair()
    try:
        writing.sendall(data)
        writing.shutdown(socket.SHUT_WR)
        parser = _RESP2Parser(socket_read_size=65536)
        parser.on_connect(_Conn(reading))
        values: list[Any] = []
        for _ in range(expect):
            assert parser._buffer is not None
            if not parser._buffer.unread_bytes() and not _more(reading):
                break
            try:
                values.append(normal(parser.read_response(disable_decoding=True)))
            except ConnectionError as exc:
                if str(exc) == SERVER_CLOSED_CONNECTION_ERROR and _raised_in(exc, "_read_from_socket"):
                    return values, "incomplete"  # the stream ended inside a reply
                return values, "refused"  # (an empty line is "closed by server" too)
            except Exception:  # InvalidResponse, ValueError on a bad length, ...
                return values, "refused"
        return values, "complete"
    finally:
        reading.close()
        writing.close()


def _raised_in(exc: BaseException, function: str) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


def _more(sock: socket.socket) -> bool:
    """Whether the socket holds unread bytes (not at its end)."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def normal(value: Any) -> Any:
    """Comparable values: an error reply as ("error", its whole text) (redis-py strips
    a known code into ``status_code``), lists element by element."""
    if isinstance(value, ResponseError):
        code = getattr(value, "status_code", None)
        return ("error", f"{code} {value}" if code else str(value))
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


# ------------------------------------------------------------------ valid replies

line_text = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20).map(
    lambda s: s.encode()
)
error_text = st.from_regex(r"\A[A-Z]{2,8} [a-z ]{0,20}\Z").map(str.encode)  # e.g. b"WRONGTYPE bad"
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: (b":%d\r\n" % n, n)),
    st.binary(max_size=40).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
    st.just((b"$-1\r\n", None)),
    line_text.map(lambda s: (b"+" + s + b"\r\n", s)),
    error_text.map(lambda s: (b"-" + s + b"\r\n", ("error", s.decode()))),
    st.just((b"*-1\r\n", None)),
)


def _array(children: st.SearchStrategy[tuple[bytes, Any]]) -> st.SearchStrategy[tuple[bytes, Any]]:
    return st.lists(children, max_size=5).map(
        lambda items: (b"*%d\r\n" % len(items) + b"".join(w for w, _ in items), [v for _, v in items])
    )


replies = st.recursive(scalars, _array, max_leaves=12)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(replies, min_size=1, max_size=6).flatmap(
        lambda rs: st.tuples(st.just(rs), split(b"".join(w for w, _ in rs)))
    )
)
def test_valid_replies_cut_anywhere_read_as_redis_py_reads_them(
    case: tuple[list[tuple[bytes, Any]], list[bytes]],
) -> None:
    rs, chunks = case
    data = b"".join(w for w, _ in rs)
    expected = [v for _, v in rs]
    assert theirs(data, len(rs)) == (expected, "complete")
    assert ours(chunks, len(rs)) == (expected, "complete")
    # Cut short by one byte: the last reply is not there yet (nothing refused).
    values, state = ours([data[:-1]], len(rs))
    assert state == "incomplete" and values == expected[: len(values)] and len(values) == len(rs) - 1


# ------------------------------------------------------------------ arbitrary streams

pieces = st.sampled_from(
    [b"*", b"$", b":", b"+", b"-", b"0", b"1", b"2", b"3", b"-1", b"-2", b"\r\n", b"x", b" ", b"?"]
)
streams = st.lists(pieces, min_size=1, max_size=30).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(streams, st.data())
def test_any_stream_same_values_or_both_refuse(data: bytes, draw: st.DataObject) -> None:
    expect = len(data) + 1  # more calls waiting than the stream can hold replies
    their_values, their_state = theirs(data, expect)
    our_values, our_state = ours(draw.draw(split(data)), expect)
    if our_state == "refused" and their_state != "refused":
        # The one place ours is stricter: a length below -1, which no server sends
        # and redis-py reads as garbage ($-2 an empty string, *-2 an empty array).
        assert re.search(rb"[$*]-[2-9]", data), (data, our_values, their_values, their_state)
        assert our_values == their_values[: len(our_values)]
        return
    assert our_state == their_state, (data, our_values, our_state, their_values, their_state)
    assert our_values == their_values, (data, our_values, their_values)
