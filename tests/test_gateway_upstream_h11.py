"""Differential test: the upstream client's response parser (``gateway.http1``) and h11
read the same bytes the same way.

Hypothesis builds responses (valid ones and subtly invalid ones: status lines, field
syntax, ``Content-Length`` / ``Transfer-Encoding`` forms, chunk sizes, extensions and
trailers, bodies by length, chunked or until close, bytes after the end, a cut),
splits them at arbitrary points into ``feed`` calls (h11: ``receive_data``), ends
with an EOF, and compares the outcome: status, fields (names and values), body
bytes, framing and whether the connection may be reused, or both refuse.

Where the parser deliberately differs from h11, the generator tags the case and the
assertion says what must happen instead; the list of differences is ``STRICTER``
(h11 accepts, we refuse) and ``LENIENT`` (h11 refuses, RFC 9112 allows, we accept),
each with its reason. An untagged case must come out exactly as in h11.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentrouter.gateway.http1 import MAX_HEAD, ResponseParser

STRICTER = {
    "obs-fold": "obsolete line folding: h11 joins the lines; RFC 9112 §5.2 lets a client refuse, and no API needs it",
    "bare-lf": "a bare LF as a line end: h11 takes it (RFC 9112 §2.2 MAY); an upstream that sends it is broken",
    "ctl": "control characters other than HTAB in a field value or reason phrase (0x01-0x08, 0x0e-0x1f, 0x7f): "
    "h11 only refuses NUL and whitespace controls; RFC 9110 §5.5 allows none, and Granian refuses them",
    "version": "HTTP/0.9, /1.2, /2.0 status lines: h11 takes any digit.digit; this client speaks 1.0 and 1.1 only",
    "cl-and-te": "Content-Length with Transfer-Encoding: h11 lets Transfer-Encoding win; RFC 9112 §6.1 calls it "
    "a possible smuggling attempt, to be handled as an error",
    "chunk-ext": "a chunk extension that is not RFC 9112 §7.1.1 grammar (no name, a space inside a token, an "
    "open quote, controls, '=' without a value): h11 takes ';' and anything after it",
    "chunk-line": "a chunk-size line over 4 KiB: h11 takes up to its buffer limit",
}
LENIENT = {
    "bws-ext": "whitespace before a chunk extension's ';' (BWS, RFC 9112 §7.1.1): h11 refuses it, hyper and the "
    "RFC accept it",
}

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VALUE_BYTES = [bytes([b]) for b in range(0x21, 0x7F)] + [b"\x80", b"\xe9", b"\xff"]
CTL_H11_TAKES = [bytes([b]) for b in (*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F)]
CTL_BOTH_REFUSE = [b"\x00", b"\x0b", b"\x0c", b"\r"]


@dataclass
class Case:
    wire: bytes = b""
    tags: list[tuple[int, str]] = field(default_factory=list)
    """(offset in wire, tag): a deliberate difference starting at that byte."""
    no_body: bool = False
    """A 204 or 304: what follows the head is past the response (tags there do not count)."""

    def add(self, data: bytes, tag: str | None = None) -> None:
        if tag is not None:
            self.tags.append((len(self.wire), tag))
        self.wire += data


# ------------------------------------------------------------------ generation


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True once in ``n`` draws (st.integers leans towards its bounds)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def field_value(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from([*VALUE_BYTES, b" ", b"\t"]), max_size=12))
    return b"".join(parts)


@st.composite
def field_name(draw: st.DrawFn) -> bytes:
    name = draw(st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10))
    return b"x-" + name.encode()  # never a framing field by chance


@st.composite
def status_line(draw: st.DrawFn, case: Case) -> None:
    kind = draw(st.sampled_from(["valid"] * 12 + ["both-refuse", "stricter"]))
    if kind == "valid":
        line = draw(
            st.sampled_from(
                [
                    b"HTTP/1.1 200 OK",
                    b"HTTP/1.1 200",
                    b"HTTP/1.1 200 ",
                    b"HTTP/1.0 200 OK",
                    b"HTTP/1.1 404 Not Found",
                    b"HTTP/1.1 503 Service Unavailable",
                    b"HTTP/1.1 204 No Content",
                    b"HTTP/1.1 304 Not Modified",
                    b"HTTP/1.1 999 Z",
                    b"HTTP/1.1 200 O\tK \xe9",
                ]
            )
        )
        case.add(line)
        case.no_body = line[9:12] in (b"204", b"304")
    elif kind == "both-refuse":
        line = draw(
            st.sampled_from(
                [
                    b"HTTP/1.1 20 OK",
                    b"HTTP/1.1 2000 OK",
                    b"HTTP/1.1 200OK",
                    b"HTTP/1.1  200 OK",
                    b"http/1.1 200 OK",
                    b"HTTP/1.1 099 X",
                    b"HTTP/1.1 2o0 X",
                    b"ICY 200 OK",
                    b"HTTP/11 200 OK",
                    b"HTTP/1.1 200 O\x00K",
                    b" HTTP/1.1 200 OK",
                    b"",
                ]
            )
        )
        case.add(line)
    else:
        version, ctl = draw(st.sampled_from([b"2.0", b"1.2", b"0.9", b"ctl"])), draw(st.sampled_from(CTL_H11_TAKES))
        if version == b"ctl":
            case.add(b"HTTP/1.1 200 O", "ctl")
            case.add(ctl + b"K")
        else:
            case.add(b"HTTP/" + version + b" 200 OK", "version")
    case.add(b"\r\n")


@st.composite
def ordinary_fields(draw: st.DrawFn, case: Case) -> None:
    for _ in range(draw(st.integers(0, 4))):
        case.add(draw(field_name()) + b":" + draw(st.sampled_from([b"", b" ", b"\t "])) + draw(field_value()) + b"\r\n")
    connection = draw(st.sampled_from([None, b"close", b"keep-alive", b"Close", b"keep-alive, close", b"upgrade"]))
    if connection is not None:
        case.add(b"Connection: " + connection + b"\r\n")


@st.composite
def bad_field(draw: st.DrawFn, case: Case) -> None:
    """At most one field-syntax defect in the head."""
    kind = draw(st.sampled_from(["none"] * 16 + ["both-refuse", "ctl", "obs-fold", "bare-lf"]))
    if kind == "none":
        return
    if kind == "both-refuse":
        case.add(
            draw(
                st.sampled_from(
                    [
                        b"X A: 1\r\n",
                        b"X-A : 1\r\n",
                        b"X(A): 1\r\n",
                        b"X@A: 1\r\n",
                        b": 1\r\n",
                        b"X-A 1\r\n",
                        b"X-\xc3\xa9: 1\r\n",
                    ]
                )
            )
        )
        case.add(b"X-B: a" + draw(st.sampled_from(CTL_BOTH_REFUSE)) + b"b\r\n")
    elif kind == "ctl":
        case.add(b"X-C: a", "ctl")
        case.add(draw(st.sampled_from(CTL_H11_TAKES)) + b"b\r\n")
    elif kind == "obs-fold":
        case.add(b"X-F: a\r\n")
        case.add(draw(st.sampled_from([b" ", b"\t", b"  "])) + b"folded\r\n", "obs-fold")
    else:
        case.add(b"X-L: a", "bare-lf")
        case.add(b"\nX-M: b\r\n")


CONTENT_LENGTH_FORMS = {
    # name -> (form of the value(s) for a body of length n, both parsers accept it)
    "plain": (lambda n: [b"%d" % n], True),
    "ows": (lambda n: [b"  %d \t" % n], True),
    "zeros": (lambda n: [b"000%d" % n], True),
    "list": (lambda n: [b"%d, %d" % (n, n)], True),
    "twice": (lambda n: [b"%d" % n, b"%d" % n], True),
    "plus": (lambda n: [b"+%d" % n], False),
    "underscore": (lambda n: [b"1_%d" % n], False),
    "hex": (lambda n: [b"0x%x" % n], False),
    "minus": (lambda n: [b"-%d" % n], False),
    "decimal": (lambda n: [b"%d.0" % n], False),
    "empty": (lambda n: [b""], False),
    "conflict": (lambda n: [b"%d, %d" % (n, n + 1)], False),
    "conflict-fields": (lambda n: [b"%d" % n, b"%d" % (n + 1)], False),
    "trailing-comma": (lambda n: [b"%d," % n], False),
    "too-long": (lambda n: [b"1" * 21], False),
    "smaller": (lambda n: [b"%d" % max(0, n - 1)], True),
    "larger": (lambda n: [b"%d" % (n + 3)], True),
}


@st.composite
def chunk_size_line(draw: st.DrawFn, case: Case, size: int) -> None:
    kind = draw(st.sampled_from(["plain"] * 12 + ["valid-ext"] * 2 + ["ows", "bws-ext", "both-refuse", "stricter"]))
    digits = draw(st.sampled_from([b"%x" % size, b"%X" % size, b"000%x" % size]))
    if kind == "plain":
        case.add(digits + b"\r\n")
    elif kind == "valid-ext":
        ext = draw(st.sampled_from([b";a", b";a=b", b';a="b c"', b';a="\\"";b=c', b"; a = b", b";a=b;c"]))
        case.add(digits + ext + b"\r\n")
    elif kind == "ows":
        case.add(digits + draw(st.sampled_from([b" ", b"\t", b" \t "])) + b"\r\n")
    elif kind == "bws-ext":
        case.add(digits)
        case.add(b" ;a=b\r\n", "bws-ext")
    elif kind == "both-refuse":
        bad = draw(st.sampled_from([b"0x", b"+", b" ", b"-"]))
        case.add(draw(st.sampled_from([bad + digits, b"", b"g", b"0" * 21])) + b"\r\n")
    else:
        case.add(digits)
        ext = draw(st.sampled_from([b";", b";a=b c", b';a="b', b";\x01", b";a=", b";a=" + b"b" * 5000]))
        case.add(ext + b"\r\n", "chunk-line" if len(ext) > 4096 else "chunk-ext")


@st.composite
def chunked_body(draw: st.DrawFn, case: Case, body: bytes) -> None:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    for piece in pieces:
        draw(chunk_size_line(case, len(piece)))
        case.add(piece)
        case.add(draw(st.sampled_from([b"\r\n"] * 20 + [b"\n", b"XX", b"\rX"])))
    case.add(draw(st.sampled_from([b"0", b"00", b"0;last"])) + b"\r\n")
    trailer = draw(st.sampled_from(["none"] * 6 + ["valid"] * 3 + ["both-refuse", "obs-fold", "ctl"]))
    if trailer == "valid":
        case.add(b"X-T: 1\r\nX-U: caf\xe9\r\n")
    elif trailer == "both-refuse":
        case.add(draw(st.sampled_from([b"bad trailer\r\n", b"X T: 1\r\n", b"X-T: a\x00b\r\n"])))
    elif trailer == "obs-fold":
        case.add(b"X-T: a\r\n")
        case.add(b" b\r\n", "obs-fold")
    elif trailer == "ctl":
        case.add(b"X-T: a", "ctl")
        case.add(draw(st.sampled_from(CTL_H11_TAKES)) + b"\r\n")
    case.add(b"\r\n")


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, list[bytes], set[str]]:
    """(wire, pieces, tags still inside the wire)."""
    case = Case()
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):
        case.add(
            draw(
                st.sampled_from(
                    [b"HTTP/1.1 100 Continue\r\n\r\n"] * 4
                    + [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"] * 4
                    + [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"]  # both refuse
                )
            )
        )
    draw(status_line(case))
    draw(ordinary_fields(case))
    draw(bad_field(case))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["length"] * 4 + ["chunked"] * 4 + ["close"] * 2 + ["both"]))
    if framing in ("length", "both"):
        forms = sorted(CONTENT_LENGTH_FORMS)
        form, _ = CONTENT_LENGTH_FORMS[draw(st.sampled_from(["plain"] * 2 * len(forms) + forms))]
        for value in form(len(body)):
            case.add(b"Content-Length: " + value + b"\r\n")
    if framing in ("chunked", "both"):
        te = draw(
            st.sampled_from(
                [b"chunked"] * 20
                + [b"Chunked", b"CHUNKED", b" chunked ", b"gzip, chunked", b"chunked, chunked", b"identity", b"gzip"]
            )
        )
        tag = "cl-and-te" if framing == "both" else None
        case.add(b"Transfer-Encoding: " + te + b"\r\n", tag)
        if draw(one_in(20)):
            case.add(b"Transfer-Encoding: chunked\r\n")  # two fields: both refuse
    case.add(b"\r\n")
    head_end = len(case.wire)
    if framing in ("chunked", "both"):
        draw(chunked_body(case, body))
    else:
        case.add(body)
    if framing != "close" and draw(one_in(5)):
        case.add(draw(st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"x", b"\r\n"])))  # bytes past the response
    wire = case.wire
    if draw(one_in(6)):
        wire = wire[: draw(st.integers(0, max(0, len(wire) - 1)))]  # the connection closes early
    points = sorted(set(draw(st.lists(st.integers(1, max(1, len(wire))), max_size=6))))
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True) if b > a]
    end = head_end if case.no_body else len(wire)
    return wire, pieces, {tag for offset, tag in case.tags if offset < min(end, len(wire))}


# ------------------------------------------------------------------ the two parsers

Outcome = tuple[Any, ...]
REFUSED: Outcome = ("refused",)


class Recorder(ResponseParser):
    def __init__(self) -> None:
        super().__init__()
        self.head: tuple[int, list[tuple[bytes, bytes]], str] | None = None
        self.body: list[bytes] = []
        self.ended = False
        self.invalid: str | None = None

    def _on_head(self, status: int, headers: list[tuple[bytes, bytes]], framing: str) -> None:
        self.head = (status, headers, framing)

    def _on_body(self, data: bytes) -> None:
        self.body.append(data)

    def _on_end(self) -> None:
        self.ended = True

    def _on_invalid(self, message: str) -> None:
        self.invalid = message


def not_framing(headers: Any) -> list[tuple[bytes, bytes]]:
    # h11 rewrites these two (one Content-Length kept, Transfer-Encoding lower-cased):
    # framing is compared on its own.
    return [(bytes(n), bytes(v)) for n, v in headers if n not in (b"content-length", b"transfer-encoding")]


def ours(pieces: list[bytes]) -> Outcome:
    p = Recorder()
    p.expect_response()
    for piece in pieces:
        p.feed(piece)
        if p.invalid is not None:
            return REFUSED
    reusable = p.ended and p.keep_alive
    if p.feed_eof() is not None or p.invalid is not None:
        return REFUSED
    assert p.head is not None and p.ended
    status, headers, framing = p.head
    return ("ok", status, not_framing(headers), b"".join(p.body), framing, reusable)


H11_FRAMING = {"ContentLengthReader": "length", "ChunkedReader": "chunked", "Http10Reader": "close"}


def theirs(pieces: list[bytes]) -> Outcome:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    conn.send(h11.Request(method="POST", target="/v1/x", headers=[("Host", "u"), ("Content-Length", "2")]))
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    response: h11.Response | None = None
    framing = ""
    body: list[bytes] = []
    ended = False
    reusable = False
    try:
        for piece in [*pieces, b""]:  # b"": the EOF
            if ended and conn.their_state is not h11.DONE:
                break  # MUST_CLOSE: a client stops reading here (h11 would refuse more bytes)
            if piece == b"":
                reusable = ended and not conn.trailing_data[0]
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    break
                if isinstance(event, h11.Response):
                    response = event
                    framing = H11_FRAMING[type(conn._reader).__name__]  # private, read for the comparison only
                elif isinstance(event, h11.Data):
                    body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    ended = True
                    if conn.their_state is not h11.DONE:
                        break
    except h11.RemoteProtocolError:
        return REFUSED
    if not ended:
        return REFUSED
    assert response is not None
    return ("ok", response.status_code, not_framing(response.headers), b"".join(body), framing, reusable)


# ------------------------------------------------------------------ the property


def check(pieces: list[bytes], tags: set[str]) -> None:
    assert tags <= STRICTER.keys() | LENIENT.keys()
    mine, h11s = ours(pieces), theirs(pieces)
    if tags & STRICTER.keys():
        assert mine == REFUSED, (tags, mine, h11s)
    elif tags & LENIENT.keys():
        assert mine == h11s or (h11s == REFUSED and mine != REFUSED), (tags, mine, h11s)
    else:
        assert mine == h11s


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
# Regressions and cases worth keeping whatever the generator draws:
@example((b"", [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"], set()))
@example((b"", [b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}"], set()))  # RFC 9110 §8.6
@example((b"", [b"HTTP/1.1 204 No Content\r\n\r\n"], set()))  # found by this test: a 204 closed its connection
@example((b"", [b"HTTP/1.1 204 No Content\r\n\r\nxx"], set()))  # a 204's "body": not reused
@example((b"", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r", b"\n0\r\n\r\n"], set()))
@example((b"", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}X"], set()))  # CRLF after data
@example((b"", [b"HTTP/1.1 200 OK\r\n", b"X-A: 1\r\n\r", b"\n{}"], set()))  # until close, split at the end
@example((b"", [b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"], set()))  # closed in the head
@example((b"", [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"], set()))
@example((b"", [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"], {"cl-and-te"}))
@example((b"", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ;a\r\n{}\r\n0\r\n\r\n"], {"bws-ext"}))
def test_same_outcome_as_h11(case: tuple[bytes, list[bytes], set[str]]) -> None:
    _, pieces, tags = case
    check(pieces, tags)


def test_every_difference_is_exercised() -> None:
    """Each listed difference really is one: h11 and this parser disagree on it."""
    samples = {
        "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n b\r\nContent-Length: 0\r\n\r\n",
        "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "ctl": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n",
        "version": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "chunk-ext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0;\r\n\r\n",
        "chunk-line": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0;a=" + b"b" * 5000 + b"\r\n\r\n",
        "bws-ext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0 ;a\r\n\r\n",
    }
    assert samples.keys() == STRICTER.keys() | LENIENT.keys()
    for tag, wire in samples.items():
        mine, h11s = ours([wire]), theirs([wire])
        if tag in STRICTER:
            assert mine == REFUSED and h11s != REFUSED, tag
        else:
            assert mine != REFUSED and h11s == REFUSED, tag
