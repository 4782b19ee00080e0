"""The upstream client is as strict as h11 / hyper: every answer that breaks HTTP/1.1
framing or field syntax is refused (``UpstreamInvalid``, a 502 for the app) from its
bytes alone, without waiting for the connection to close, and the connection is never
reused after it. What RFC 9110/9112 allow is still accepted.

Each bad answer below is served on a connection the server keeps open; the next
request must arrive on a new connection and succeed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentrouter.config import ProviderSettings
from agentrouter.gateway.upstream import UpstreamClient, UpstreamInvalid, UpstreamUnavailable
from tests.gateway_fixtures import RawServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def head(*lines: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"\r\n".join([status, *lines]) + b"\r\n\r\n"


def chunked(*wire: bytes) -> bytes:
    return head(b"Transfer-Encoding: chunked") + b"".join(wire)


# name -> the answer's bytes; every one must be refused.
BAD: dict[str, bytes] = {
    # field values: RFC 9110 §5.5 allows VCHAR, obs-text, SP and HTAB only
    "CR in a value": head(b"X-A: a\rb", b"Content-Length: 2") + b"{}",
    "LF in a value (a bare LF line end)": head(b"X-A: a\nX-B: b", b"Content-Length: 2") + b"{}",
    "NUL in a value": head(b"X-A: a\x00b", b"Content-Length: 2") + b"{}",
    "a C0 control in a value": head(b"X-A: a\x01b", b"Content-Length: 2") + b"{}",
    "ESC in a value": head(b"X-A: \x1b[31m", b"Content-Length: 2") + b"{}",
    "DEL in a value": head(b"X-A: a\x7fb", b"Content-Length: 2") + b"{}",
    "a control in the reason phrase": head(b"Content-Length: 2", status=b"HTTP/1.1 200 O\x01K") + b"{}",
    # field names: a token (RFC 9110 §5.1), the colon right after it
    "a space in a name": head(b"X A: 1", b"Content-Length: 2") + b"{}",
    "a space before the colon": head(b"X-A : 1", b"Content-Length: 2") + b"{}",
    "a parenthesis in a name": head(b"X(A): 1", b"Content-Length: 2") + b"{}",
    "a quote in a name": head(b'X"A: 1', b"Content-Length: 2") + b"{}",
    "an at sign in a name": head(b"X@A: 1", b"Content-Length: 2") + b"{}",
    "a non-ASCII name": head(b"X-\xc3\xa9: 1", b"Content-Length: 2") + b"{}",
    "an empty name": head(b": 1", b"Content-Length: 2") + b"{}",
    "a line without a colon": head(b"X-A 1", b"Content-Length: 2") + b"{}",
    # obsolete line folding (RFC 9112 §5.2)
    "obs-fold with a space": head(b"X-A: 1", b"  continued", b"Content-Length: 2") + b"{}",
    "obs-fold with a tab": head(b"X-A: 1", b"\tcontinued", b"Content-Length: 2") + b"{}",
    "obs-fold as the first line": head(b" X-A: 1", b"Content-Length: 2") + b"{}",
    # Content-Length: 1*DIGIT, one value (int() takes all of these)
    "Content-Length +2": head(b"Content-Length: +2") + b"{}",
    "Content-Length 0_2": head(b"Content-Length: 0_2") + b"{}",
    "Content-Length 0x2": head(b"Content-Length: 0x2") + b"{}",
    "Content-Length -2": head(b"Content-Length: -2") + b"{}",
    "Content-Length 2.0": head(b"Content-Length: 2.0") + b"{}",
    "Content-Length empty": head(b"Content-Length:") + b"{}",
    "Content-Length Arabic-Indic digit": head(b"Content-Length: \xd9\xa2") + b"{}",
    "Content-Length 2, 3": head(b"Content-Length: 2, 3") + b"{}",
    "Content-Length 2,": head(b"Content-Length: 2,") + b"{}",
    "two different Content-Length": head(b"Content-Length: 2", b"Content-Length: 3") + b"{}",
    "Content-Length 2 and 02": head(b"Content-Length: 2", b"Content-Length: 02") + b"{}",
    "Content-Length of 21 digits": head(b"Content-Length: " + b"1" * 21) + b"{}",
    # Transfer-Encoding: only exactly chunked
    "Transfer-Encoding gzip, chunked": head(b"Transfer-Encoding: gzip, chunked") + b"2\r\n{}\r\n0\r\n\r\n",
    "Transfer-Encoding chunked, chunked": head(b"Transfer-Encoding: chunked, chunked") + b"2\r\n{}\r\n0\r\n\r\n",
    "Transfer-Encoding identity": head(b"Transfer-Encoding: identity", b"Content-Length: 2") + b"{}",
    "Transfer-Encoding gzip": head(b"Transfer-Encoding: gzip") + b"{}",
    "two Transfer-Encoding": head(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
    "Content-Length and Transfer-Encoding": head(b"Content-Length: 2", b"Transfer-Encoding: chunked")
    + b"2\r\n{}\r\n0\r\n\r\n",
    "Transfer-Encoding and Content-Length": head(b"Transfer-Encoding: chunked", b"Content-Length: 12")
    + b"2\r\n{}\r\n0\r\n\r\n",
    # chunk sizes: 1*HEXDIG (int(x, 16) takes more)
    "chunk size 0x2": chunked(b"0x2\r\n{}\r\n0\r\n\r\n"),
    "chunk size +2": chunked(b"+2\r\n{}\r\n0\r\n\r\n"),
    "chunk size 0_2": chunked(b"0_2\r\n{}\r\n0\r\n\r\n"),
    "chunk size -2": chunked(b"-2\r\n{}\r\n0\r\n\r\n"),
    "chunk size with leading space": chunked(b" 2\r\n{}\r\n0\r\n\r\n"),
    "chunk size empty": chunked(b"\r\n{}\r\n0\r\n\r\n"),
    "chunk size g": chunked(b"g\r\n{}\r\n0\r\n\r\n"),
    "chunk size of 21 digits": chunked(b"0" * 20 + b"2\r\n{}\r\n0\r\n\r\n"),
    "chunk size line over 4 KiB": chunked(b"2;a=" + b"b" * 5000 + b"\r\n{}\r\n0\r\n\r\n"),
    "chunk size line over 4 KiB, no end yet": chunked(b"2;a=" + b"b" * 5000),
    # chunk extensions: *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
    "chunk extension without a name": chunked(b"2;\r\n{}\r\n0\r\n\r\n"),
    "chunk extension with a space in its value": chunked(b"2;a=b c\r\n{}\r\n0\r\n\r\n"),
    "chunk extension with an open quote": chunked(b'2;a="b\r\n{}\r\n0\r\n\r\n'),
    "chunk extension with a control": chunked(b"2;a=\x01\r\n{}\r\n0\r\n\r\n"),
    "chunk extension with =, no value": chunked(b"2;a=\r\n{}\r\n0\r\n\r\n"),
    # chunk data must end with CRLF
    "chunk data longer than its size": chunked(b"2\r\n{}}\r\n0\r\n\r\n"),
    "chunk data ended by LF": chunked(b"2\r\n{}\n0\r\n\r\n"),
    "chunk line ended by LF": chunked(b"2\n{}\r\n0\r\n\r\n"),
    # trailers: field lines like the head's
    "a trailer without a colon": chunked(b"2\r\n{}\r\n0\r\nbad trailer\r\n\r\n"),
    "a trailer with a control": chunked(b"2\r\n{}\r\n0\r\nX-T: a\x00b\r\n\r\n"),
    "an obs-folded trailer": chunked(b"2\r\n{}\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
    # status lines: HTTP/1.0 or HTTP/1.1, SP, 3 digits, then SP reason or nothing
    "a 2-digit status": head(b"Content-Length: 2", status=b"HTTP/1.1 20 OK") + b"{}",
    "a 4-digit status": head(b"Content-Length: 2", status=b"HTTP/1.1 2000 OK") + b"{}",
    "no space before the reason": head(b"Content-Length: 2", status=b"HTTP/1.1 200OK") + b"{}",
    "two spaces before the status": head(b"Content-Length: 2", status=b"HTTP/1.1  200 OK") + b"{}",
    "HTTP/2.0": head(b"Content-Length: 2", status=b"HTTP/2.0 200 OK") + b"{}",
    "HTTP/2": head(b"Content-Length: 2", status=b"HTTP/2 200 OK") + b"{}",
    "HTTP/1.2": head(b"Content-Length: 2", status=b"HTTP/1.2 200 OK") + b"{}",
    "HTTP/0.9": head(b"Content-Length: 2", status=b"HTTP/0.9 200 OK") + b"{}",
    "lower-case http": head(b"Content-Length: 2", status=b"http/1.1 200 OK") + b"{}",
    "a status below 100": head(b"Content-Length: 2", status=b"HTTP/1.1 099 Low") + b"{}",
    "a letter in the status": head(b"Content-Length: 2", status=b"HTTP/1.1 2o0 OK") + b"{}",
    "ICY": head(b"Content-Length: 2", status=b"ICY 200 OK") + b"{}",
    "an empty line before the status": b"\r\n" + OK,
    "a bare-LF head": b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}",
    # protocol switches and oversized heads
    "101 Switching Protocols": head(b"Upgrade: websocket", b"Connection: Upgrade", status=b"HTTP/1.1 101 Switching"),
    "101 after 100 Continue": head(status=b"HTTP/1.1 100 Continue")
    + head(b"Upgrade: h2c", status=b"HTTP/1.1 101 Switching"),
    "an invalid interim response": head(b"X A: 1", status=b"HTTP/1.1 100 Continue") + OK,
    "a head over 64 KiB, complete in one write": head(b"X-Big: " + b"a" * 70_000, b"Content-Length: 2") + b"{}",
    "a head over 64 KiB, no end": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000,
    "a head of many small fields over 64 KiB": head(*[b"X-%d: 1" % i for i in range(8000)], b"Content-Length: 2")
    + b"{}",
}

# Allowed by RFC 9110/9112 (and by h11 and hyper): (answer, body the client must read).
GOOD: dict[str, tuple[bytes, bytes]] = {
    "no reason phrase": (head(b"Content-Length: 2", status=b"HTTP/1.1 200") + b"{}", b"{}"),
    "an empty reason phrase": (head(b"Content-Length: 2", status=b"HTTP/1.1 200 ") + b"{}", b"{}"),
    "a reason with tabs and obs-text": (head(b"Content-Length: 2", status=b"HTTP/1.1 200 O\tK \xe9") + b"{}", b"{}"),
    "HTTP/1.0 with a length": (head(b"Content-Length: 2", status=b"HTTP/1.0 200 OK") + b"{}", b"{}"),
    "OWS around values": (head(b"X-A: \t 1 \t", b"Content-Length:  2 ") + b"{}", b"{}"),
    "an empty value": (head(b"X-A:", b"X-B: \t", b"Content-Length: 2") + b"{}", b"{}"),
    "obs-text in a value": (head(b"X-A: caf\xe9 \x80\xff", b"Content-Length: 2") + b"{}", b"{}"),
    "every token character in a name": (head(b"!#$%&'*+-.^_`|~09azAZ: 1", b"Content-Length: 2") + b"{}", b"{}"),
    "Content-Length 2, 2 (RFC 9110 §8.6)": (head(b"Content-Length: 2, 2") + b"{}", b"{}"),
    "Content-Length 2 twice": (head(b"Content-Length: 2", b"Content-Length: 2") + b"{}", b"{}"),
    "Content-Length with leading zeros": (head(b"Content-Length: 0002") + b"{}", b"{}"),
    "Transfer-Encoding Chunked (case-insensitive)": (
        head(b"Transfer-Encoding: Chunked") + b"2\r\n{}\r\n0\r\n\r\n",
        b"{}",
    ),
    "upper-case and zero-padded chunk sizes": (chunked(b"0000A\r\n0123456789\r\n0\r\n\r\n"), b"0123456789"),
    "chunk extensions": (
        chunked(b'2;a=b;c="d \\" e";f\r\n{}\r\n1 ; g = "h" ; i\r\nx\r\n0;last\r\n\r\n'),
        b"{}x",
    ),
    "whitespace after a chunk size": (chunked(b"2 \t\r\n{}\r\n0\r\n\r\n"), b"{}"),
    "trailers": (chunked(b"2\r\n{}\r\n0\r\nX-T: 1\r\nX-U: caf\xe9\r\n\r\n"), b"{}"),
    "interim responses first": (head(status=b"HTTP/1.1 100 Continue") + head(status=b"HTTP/1.1 103 Hints") + OK, b"{}"),
}


@pytest.fixture
async def clients() -> AsyncIterator[list[UpstreamClient]]:
    made: list[UpstreamClient] = []
    yield made
    for c in made:
        await c.close()


async def client_for(port: int, made: list[UpstreamClient]) -> UpstreamClient:
    settings = ProviderSettings(
        name="t", type="openai", base_url=f"http://127.0.0.1:{port}/v1", models=("m",), read_timeout=3.0
    )
    client = UpstreamClient(settings)
    await client.start()
    made.append(client)
    return client


async def exchange(client: UpstreamClient) -> bytes | UpstreamUnavailable:
    """One request: the body read, or the error the client raised."""
    try:
        resp = await client.post(b"/v1/x", b"{}", [])
    except UpstreamUnavailable as exc:
        return exc
    try:
        return await client.read(resp)
    except UpstreamUnavailable as exc:
        return exc
    finally:
        client.release(resp)


def serve_first(answer: bytes) -> tuple[RawServer, list[bytes]]:
    """A server that sends ``answer`` on its first connection and keeps that connection
    open (so no refusal can come from its end), and answers ``OK`` on later ones."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = server.connections == 1
        while True:
            seen.append(await server.read_request(reader))
            writer.write(answer if first else OK)
            await writer.drain()
            if first:
                await reader.read()  # until the client hangs up
                return

    server = RawServer(handler)
    return server, seen


@pytest.mark.parametrize("name", list(BAD))
async def test_refused_and_connection_not_reused(clients: list[UpstreamClient], name: str) -> None:
    server, _ = serve_first(BAD[name])
    async with server:
        client = await client_for(server.port, clients)
        got = await exchange(client)
        assert isinstance(got, UpstreamInvalid), f"{name}: {got!r}"
        assert await exchange(client) == b"{}"
        assert server.connections == 2  # the refused answer's connection was closed, not reused


@pytest.mark.parametrize("name", list(GOOD))
async def test_accepted_and_connection_reused(clients: list[UpstreamClient], name: str) -> None:
    answer, body = GOOD[name]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer if len(server.requests) == 1 else OK)
            await writer.drain()

    async with RawServer(handler) as server:
        client = await client_for(server.port, clients)
        assert await exchange(client) == body
        assert await exchange(client) == b"{}"
        # HTTP/1.0 answers close the connection (no keep-alive for 1.0); the rest keep it.
        assert server.connections == (2 if b"HTTP/1.0" in answer else 1)


async def test_header_names_lower_case_values_trimmed(clients: list[UpstreamClient]) -> None:
    answer = head(b"Content-Type:  application/json \t", b"X-Request-ID: up-1", b"Content-Length: 2") + b"{}"
    server, _ = serve_first(answer)
    async with server:
        client = await client_for(server.port, clients)
        resp = await client.post(b"/v1/x", b"{}", [])
        assert resp.headers == [
            (b"content-type", b"application/json"),
            (b"x-request-id", b"up-1"),
            (b"content-length", b"2"),
        ]
        assert await client.read(resp) == b"{}"
        client.release(resp)


async def test_bytes_after_a_complete_answer_close_the_connection(clients: list[UpstreamClient]) -> None:
    """Extra bytes after the body (a 204's included): the answer stands, the connection
    is not trusted with another request."""
    for answer in (OK + b"HTTP/1.1 200 OK\r\n", head(status=b"HTTP/1.1 204 No Content") + b"junk"):
        server, _ = serve_first(answer)
        async with server:
            client = await client_for(server.port, clients)
            got = await exchange(client)
            assert got == (b"{}" if answer.startswith(OK) else b"")
            assert await exchange(client) == b"{}"
            assert server.connections == 2
