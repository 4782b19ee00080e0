"""HTTP/1.1 responses, sans I/O: the framing and field syntax of what an upstream sends.

``ResponseParser`` turns the bytes of one response at a time (fed as they arrive, split
anywhere) into calls of four hooks: ``_on_head(status, headers, framing)``,
``_on_body(data)``, ``_on_end()`` and ``_on_invalid(message)``. The upstream
client's connection protocol subclasses it (``upstream._Connection``); the
differential test subclasses it to compare it with h11 on the same bytes
(``tests/test_gateway_upstream_h11.py``).

As strict as h11 and hyper, stricter where RFC 9110/9112 allow a choice and nothing
legitimate needs leniency. Refused, as an invalid answer, from the bytes alone:

* a status line other than ``HTTP/1.1`` or ``HTTP/1.0``, one space, three digits
  (100-999), then nothing or one space and a reason phrase; a ``101`` (the client
  never asks for an upgrade);
* a head over 64 KiB (each interim head counts on its own), a bare CR or LF in it
  (CRLF ends every line), any control character but HTAB in it (a field value is
  VCHAR, obs-text, SP and HTAB, RFC 9110 §5.5), a field name that is not a token or is
  followed by anything but the colon, obsolete line folding (RFC 9112 §5.2);
* ``Content-Length`` that is not 1*DIGIT (at most 20 digits), or two different
  values (a repeated identical value, ``2, 2`` or two fields, is accepted as RFC
  9110 §8.6 allows, like h11); ``Transfer-Encoding`` other than exactly one
  ``chunked`` (case-insensitive: ``gzip, chunked``, ``chunked, chunked``,
  ``identity``, two fields are refused); both of them in one head;
* a chunk-size line that is not 1-20 hex digits, optional extensions per RFC 9112
  §7.1.1 (``*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )``,
  parsed and ignored) and optional trailing SP/HTAB (which h11 and hyper allow), or
  longer than 4 KiB; chunk data not followed by CRLF; trailer lines that are not
  field lines (trailers are checked and dropped).

What comes after the end of a response (bytes past ``Content-Length`` or the last
chunk, a 204's body) does not change the response, but clears ``keep_alive``: the
connection is not trusted with another request. HTTP/1.0 and ``Connection: close``
clear it too; a body delimited by the connection's close (no length, not chunked)
ends only at EOF (``feed_eof``). Field names are given lower-cased, values without
their surrounding SP/HTAB.

The common path costs a ``find`` for the end of the head, a ``split``, a ``join`` and a
``translate`` over it, per field a ``partition``, a ``lower`` and a ``strip``, and one
``translate`` of all the names: about what the lenient parsing it replaced cost (see
``benches/bench_upstream.py``).
"""

from __future__ import annotations

import re

__all__ = [
    "CHUNKED",
    "CLOSE",
    "LENGTH",
    "MAX_CHUNK_LINE",
    "MAX_HEAD",
    "ResponseParser",
]

MAX_HEAD = 64 * 1024
"""Bytes of one response head (or of the trailer section), CRLFs included."""
MAX_CHUNK_LINE = 4096
"""Bytes of one chunk-size line with its extensions."""

# Framing of a response body
LENGTH, CHUNKED, CLOSE = "length", "chunked", "close"

# Parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)

# bytes.translate(None, delete=X) deletes the allowed bytes: what is left is the offence.
_LINE_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEX = b"0123456789ABCDEFabcdef"
_FRAMING_NAME_LENGTHS = frozenset({len(b"connection"), len(b"content-length"), len(b"transfer-encoding")})

_TOKEN_RE = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED_RE = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,20})((?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*)[ \t]*" % (_TOKEN_RE, _TOKEN_RE, _QUOTED_RE)
)


class _Invalid(Exception):
    """Raised inside the parser; reported through ``_on_invalid``."""


def _lines(block: bytes, what: str) -> list[bytes]:
    """The lines of a head or trailer section (without its final CRLF CRLF), after
    checking that they hold no control character but HTAB (a CR or LF left once the
    block is split at CRLF is a bare one)."""
    lines = block.split(b"\r\n")
    bad = b"".join(lines).translate(None, _LINE_BYTES)
    if bad:
        if b"\r" in bad or b"\n" in bad:
            raise _Invalid(f"a bare CR or LF in the {what}")
        raise _Invalid(f"a control character ({bad[:1]!r}) in the {what}")
    return lines


def _fields(lines: list[bytes], what: str) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, value without its surrounding SP/HTAB) of each field line."""
    fields = []
    names = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name:
            raise _Invalid(_field_error(line, what))
        names.append(name)
        fields.append((name.lower(), value.strip(b" \t")))
    if b"".join(names).translate(None, _TOKEN):  # one check for all the names
        bad = next(line for line, name in zip(lines, names, strict=True) if name.translate(None, _TOKEN))
        raise _Invalid(_field_error(bad, what))
    return fields


def _field_error(line: bytes, what: str) -> str:
    if line[:1] in (b" ", b"\t"):
        return f"obsolete line folding in the {what}"
    return f"an invalid field line in the {what}: {line[:60]!r}"


def _read_head(block: bytes) -> tuple[int, list[tuple[bytes, bytes]], str, int, bool]:
    """(status, fields, framing, length, keep_alive) of one response head."""
    lines = _lines(block, "response head")
    line = lines[0]
    if (
        len(line) < 12
        or line[:7] != b"HTTP/1."
        or line[7] not in b"01"
        or line[8] != 0x20
        or not line[9:12].isdigit()
        or (len(line) > 12 and line[12] != 0x20)
        or line[9] == 0x30
    ):
        raise _Invalid(f"not an HTTP/1.1 status line: {line[:60]!r}")
    status = int(line[9:12])
    keep_alive = line[7] == 0x31  # HTTP/1.1 keeps the connection unless told otherwise; 1.0 never here
    del lines[0]
    fields = _fields(lines, "response head")
    length_text: bytes | None = None
    chunked = False
    for name, value in fields:
        if len(name) not in _FRAMING_NAME_LENGTHS:
            continue
        if name == b"content-length":
            for part in value.split(b","):
                part = part.strip(b" \t")
                if not part.isdigit() or len(part) > 20:
                    raise _Invalid(f"an invalid Content-Length: {value[:60]!r}")
                if length_text is None:
                    length_text = part
                elif part != length_text:
                    raise _Invalid(f"conflicting Content-Length values: {length_text!r} and {part!r}")
        elif name == b"transfer-encoding":
            if chunked:
                raise _Invalid("more than one Transfer-Encoding field")
            if value.lower() != b"chunked":
                raise _Invalid(f"Transfer-Encoding {value[:60]!r}: only chunked is supported")
            chunked = True
        elif name == b"connection" and b"close" in [t.strip(b" \t").lower() for t in value.split(b",")]:
            keep_alive = False
    if chunked and length_text is not None:
        raise _Invalid("both Content-Length and Transfer-Encoding")
    if chunked:
        return status, fields, CHUNKED, 0, keep_alive
    if length_text is not None:
        return status, fields, LENGTH, int(length_text), keep_alive
    return status, fields, CLOSE, 0, keep_alive


def _chunk_size(line: bytes) -> int:
    if 0 < len(line) <= 20 and not line.translate(None, _HEX):
        return int(line, 16)  # the common case: hex digits only
    m = _CHUNK_LINE.fullmatch(line)
    if m is None:
        raise _Invalid(f"an invalid chunk-size line: {line[:60]!r}")
    return int(m.group(1), 16)


class ResponseParser:
    """Parses one response at a time; call ``expect_response`` before each.

    Subclasses implement the hooks. After ``_on_invalid`` or ``_on_end`` the state is
    done; bytes fed then clear ``keep_alive`` and call ``_on_extra``.
    """

    def __init__(self) -> None:
        self.state = _DONE
        self.buf = bytearray()
        self.keep_alive = True
        """Whether the connection may carry another request after this response."""
        self.remaining = 0
        self._scan = 0
        self._started = False

    # -------------------------------------------------------------- hooks

    def _on_head(self, status: int, headers: list[tuple[bytes, bytes]], framing: str) -> None:
        raise NotImplementedError

    def _on_body(self, data: bytes) -> None:
        raise NotImplementedError

    def _on_end(self) -> None:
        raise NotImplementedError

    def _on_invalid(self, message: str) -> None:
        raise NotImplementedError

    def _on_extra(self) -> None:
        """Bytes after the end of the response."""

    # -------------------------------------------------------------- input

    def expect_response(self) -> None:
        self.state = _HEAD
        self.buf.clear()
        self.keep_alive = True
        self.remaining = 0
        self._scan = 0
        self._started = False

    def abandon(self) -> None:
        """Give up on the response in progress (the connection will be closed)."""
        self.state = _DONE
        self.keep_alive = False
        self.buf.clear()

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def feed(self, data: bytes) -> None:
        state = self.state
        if state == _LENGTH:
            self._body_length(data)
        elif state == _UNTIL_CLOSE:
            self._on_body(data)
        elif state == _HEAD:
            self._started = True
            if self.buf:  # the head came in pieces
                self.buf += data
                data = bytes(self.buf)
                self.buf.clear()
            self._parse_head(data)
        elif state == _DONE:
            self.keep_alive = False
            self._on_extra()
        else:
            self.buf += data
            self._parse_chunked()

    def feed_eof(self) -> str | None:
        """The connection was closed. None if the response is complete (or a body
        delimited by the close just ended), else why it is not."""
        state = self.state
        if state == _DONE:
            return None
        self.keep_alive = False
        if state == _UNTIL_CLOSE:
            self._end()
            return None
        self.state = _DONE
        if state == _HEAD:
            if not self._started:
                return "closed the connection without answering"
            return "closed the connection in the middle of the response head"
        if state == _LENGTH:
            return f"closed the connection {self.remaining} bytes before the end of the body"
        return "closed the connection before the end of the chunked body"

    # -------------------------------------------------------------- parsing

    def _invalid(self, message: str) -> None:
        self.state = _DONE
        self.keep_alive = False
        self.buf.clear()
        self._on_invalid(message)

    def _end(self) -> None:
        self.state = _DONE
        if self.buf:
            self.keep_alive = False  # bytes past the response
            self.buf.clear()
        self._on_end()

    def _parse_head(self, data: bytes) -> None:
        """``data``: what arrived of the response so far (the head first)."""
        start = 0
        try:
            while True:
                end = data.find(b"\r\n\r\n", start + self._scan)
                if end < 0:
                    rest = data[start:]
                    if len(rest) > MAX_HEAD:
                        raise _Invalid("a response head larger than 64 KiB")
                    if rest.count(b"\n") != rest.count(b"\r\n"):
                        raise _Invalid("a bare LF in the response head")
                    self.buf += rest
                    self._scan = max(0, len(rest) - 3)
                    return
                if end + 4 - start > MAX_HEAD:
                    raise _Invalid("a response head larger than 64 KiB")
                block = data[start:end]
                start = end + 4
                self._scan = 0
                status, fields, framing, length, keep_alive = _read_head(block)
                if status >= 200:
                    break
                if status == 101:
                    raise _Invalid("101 Switching Protocols, to a request that asked for no upgrade")
                # 100 Continue, 103 Early Hints: the real response follows.
        except _Invalid as exc:
            return self._invalid(str(exc))
        if status == 204 or status == 304:
            framing, length = LENGTH, 0  # never a body (RFC 9110 §6.4.1)
        elif framing == CLOSE:
            keep_alive = False
        self.keep_alive = keep_alive
        self._on_head(status, fields, framing)
        if self.state != _HEAD:
            return  # the hook gave up on the response
        rest = data[start:] if start < len(data) else b""
        if framing == CHUNKED:
            self.state = _CHUNK_SIZE
            if rest:
                self.buf += rest
                self._parse_chunked()
        elif framing == LENGTH:
            self.state = _LENGTH
            self.remaining = length
            if length == 0:
                if rest:
                    self.keep_alive = False  # bytes past the response
                self._end()
            elif rest:
                self._body_length(rest)
        else:
            self.state = _UNTIL_CLOSE
            if rest:
                self._on_body(rest)

    def _body_length(self, data: bytes) -> None:
        remaining = self.remaining
        if len(data) < remaining:
            self.remaining = remaining - len(data)
            self._on_body(data)
            return
        if len(data) > remaining:
            data = data[:remaining]
            self.keep_alive = False  # bytes past the response
        self.remaining = 0
        if data:
            self._on_body(data)
        self._end()

    def _parse_chunked(self) -> None:
        buf = self.buf
        out: list[bytes] = []
        try:
            while True:
                state = self.state
                if state == _CHUNK_DATA:
                    if not buf:
                        break
                    take = min(self.remaining, len(buf))
                    out.append(bytes(buf[:take]))
                    del buf[:take]
                    self.remaining -= take
                    if self.remaining == 0:
                        self.state = _CHUNK_CRLF
                elif state == _CHUNK_SIZE:
                    eol = buf.find(b"\r\n")
                    if eol < 0:
                        if len(buf) > MAX_CHUNK_LINE:
                            raise _Invalid("a chunk-size line longer than 4 KiB")
                        break
                    if eol > MAX_CHUNK_LINE:
                        raise _Invalid("a chunk-size line longer than 4 KiB")
                    size = _chunk_size(bytes(buf[:eol]))
                    del buf[: eol + 2]
                    if size == 0:
                        self.state = _TRAILERS
                    else:
                        self.remaining = size
                        self.state = _CHUNK_DATA
                elif state == _CHUNK_CRLF:
                    if len(buf) < 2:
                        if buf and buf[0] != 0x0D:
                            raise _Invalid("chunk data not followed by CRLF")
                        break
                    if buf[0] != 0x0D or buf[1] != 0x0A:
                        raise _Invalid("chunk data not followed by CRLF")
                    del buf[:2]
                    self.state = _CHUNK_SIZE
                elif state == _TRAILERS:
                    if buf[:2] == b"\r\n":
                        del buf[:2]
                    else:
                        end = buf.find(b"\r\n\r\n")
                        if end < 0:
                            if len(buf) > MAX_HEAD:
                                raise _Invalid("a trailer section larger than 64 KiB")
                            if buf.count(b"\n") != buf.count(b"\r\n"):
                                raise _Invalid("a bare LF in the trailer section")
                            break
                        _fields(_lines(bytes(buf[:end]), "trailer section"), "trailer section")
                        del buf[: end + 4]
                    if out:
                        self._on_body(out[0] if len(out) == 1 else b"".join(out))
                    self._end()
                    return
                else:
                    break
        except _Invalid as exc:
            return self._invalid(str(exc))
        if out:
            self._on_body(out[0] if len(out) == 1 else b"".join(out))
