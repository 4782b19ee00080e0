"""The upstream client over TLS, against a real TLS server on loopback whose
certificate comes from a test CA (trustme): a JSON answer, a chunked SSE stream
relayed as it arrives, keep-alive reuse of one TLS connection, and the certificates
the client must refuse (unknown CA, wrong host name) as a 502-class error, through
the gateway too. Also: TCP_NODELAY on the upstream sockets, plain and TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from agentrouter.config import ProviderSettings
from agentrouter.gateway.app import Gateway
from agentrouter.gateway.upstream import UpstreamClient, UpstreamUnavailable
from tests.gateway_fixtures import RawServer, call, new_key, settings_for, start_gateway, stored_usage

ANSWER = (
    b'{"id":"chatcmpl-tls","object":"chat.completion","choices":[],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
)
EVENTS = [b'data: {"n": %d}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]

Handler = Callable[["TLSServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TLSServer(RawServer):
    """HTTP/1.1 over TLS on 127.0.0.1, certificate for ``localhost`` from ``ca``."""

    def __init__(self, ca: trustme.CA, handler: Handler, host: str = "localhost") -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host).configure_cert(context)
        super().__init__(lambda reader, writer: handler(self, reader, writer), ssl=context)


async def json_server(server: TLSServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER
        )
        await writer.drain()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def settings(port: int, host: str = "localhost") -> ProviderSettings:
    return ProviderSettings(
        name="tls",
        type="openai",
        base_url=f"https://{host}:{port}/v1",
        api_key="k",
        models=("m",),
        connect_timeout=5.0,
        read_timeout=5.0,
    )


@pytest.fixture
async def clients() -> AsyncIterator[list[UpstreamClient]]:
    opened: list[UpstreamClient] = []
    yield opened
    for c in opened:
        await c.close()


async def started(clients: list[UpstreamClient], client: UpstreamClient) -> UpstreamClient:
    await client.start()
    clients.append(client)
    return client


def nodelay(client: UpstreamClient) -> list[int]:
    """TCP_NODELAY of each open upstream socket of the client."""
    values = []
    for conn in client._connections:
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        values.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return values


async def test_json_answer_over_tls(ca: trustme.CA, ca_file: str, clients: list[UpstreamClient]) -> None:
    async with TLSServer(ca, json_server) as server:
        client = await started(clients, UpstreamClient(settings(server.port), ca_file=ca_file))
        resp = await client.post(b"/v1/chat/completions", b'{"model":"m"}', [(b"Content-Type", b"application/json")])
        assert resp.status == 200
        assert (b"content-type", b"application/json") in resp.headers
        assert await client.read(resp) == ANSWER
        client.release(resp)
        request = server.requests[0]
        assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:%d\r\n" % server.port)
        assert request.endswith(b'Content-Length: 13\r\n\r\n{"model":"m"}')
        # The connection really is TLS, verified, and without Nagle like a plain one.
        (conn,) = client._connections
        assert conn.transport is not None
        assert conn.transport.get_extra_info("peercert")["subjectAltName"] == (("DNS", "localhost"),)
        assert nodelay(client) and all(nodelay(client))


async def test_sse_stream_over_tls_relayed_as_it_arrives(
    ca: trustme.CA, ca_file: str, clients: list[UpstreamClient]
) -> None:
    """Chunked SSE: each event reaches the caller before the server sends the next."""
    delivered = asyncio.Event()

    async def handler(server: TLSServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for event in EVENTS:
                delivered.clear()
                writer.write(b"%x\r\n" % len(event) + event + b"\r\n")
                await writer.drain()
                await asyncio.wait_for(delivered.wait(), 5)  # the client has it: only then the next
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with TLSServer(ca, handler) as server:
        client = await started(clients, UpstreamClient(settings(server.port), ca_file=ca_file))
        for _ in range(2):  # and the TLS connection is reused after a stream
            resp = await client.post(b"/v1/chat/completions", b'{"stream":true}', [])
            assert resp.status == 200
            got = []
            async for chunk in client.iter_chunks(resp):
                got.append(chunk)
                if b"".join(got).endswith(b"\n\n"):
                    delivered.set()
            client.release(resp)
            assert b"".join(got) == b"".join(EVENTS)
            assert len(got) >= len(EVENTS)  # one event at a time, never the stream whole
        assert server.connections == 1


async def test_keep_alive_reuse_over_tls(ca: trustme.CA, ca_file: str, clients: list[UpstreamClient]) -> None:
    async with TLSServer(ca, json_server) as server:
        client = await started(clients, UpstreamClient(settings(server.port), ca_file=ca_file))
        for _ in range(5):
            resp = await client.post(b"/v1/chat/completions", b"{}", [])
            assert await client.read(resp) == ANSWER
            client.release(resp)
        assert server.connections == 1 and client.open_connections == 1
        # Concurrent requests open more connections, which are kept and reused in turn.
        for _ in range(3):
            resps = await asyncio.gather(*[client.post(b"/v1/chat/completions", b"{}", []) for _ in range(3)])
            for resp in resps:
                assert await client.read(resp) == ANSWER
                client.release(resp)
        assert server.connections == 3 and client.open_connections == 3
        assert len(server.requests) == 14


async def test_an_ssl_context_given_to_the_client(ca: trustme.CA, clients: list[UpstreamClient]) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with TLSServer(ca, json_server) as server:
        client = await started(clients, UpstreamClient(settings(server.port), ssl_context=context))
        resp = await client.post(b"/v1/chat/completions", b"{}", [])
        assert await client.read(resp) == ANSWER
        client.release(resp)


@pytest.mark.parametrize("case", ["system store", "another CA", "wrong host name"])
async def test_certificates_the_client_refuses(
    ca: trustme.CA, ca_file: str, tmp_path: Path, clients: list[UpstreamClient], case: str
) -> None:
    """Refused at the handshake: UpstreamUnavailable (502), and nothing is sent."""
    issued_for = "other.example" if case == "wrong host name" else "localhost"
    async with TLSServer(ca, json_server, host=issued_for) as server:
        if case == "system store":  # the test CA is in no system trust store
            client = UpstreamClient(settings(server.port))
        elif case == "another CA":
            other = tmp_path / "other-ca.pem"
            trustme.CA().cert_pem.write_to_path(str(other))
            client = UpstreamClient(settings(server.port), ca_file=str(other))
        else:
            client = UpstreamClient(settings(server.port), ca_file=ca_file)
        await started(clients, client)
        with pytest.raises(UpstreamUnavailable, match="cannot connect to localhost") as refused:
            await client.post(b"/v1/chat/completions", b"{}", [])
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value) or "certificate" in str(refused.value).lower()
        assert server.requests == [] and client.open_connections == 0


async def test_gateway_answers_502_for_an_untrusted_upstream(ca: trustme.CA, tmp_path: Path) -> None:
    """Through the app (its provider client uses the system store): a 502 in the
    caller's dialect, counted for the key, and the request never reaches the server."""
    async with TLSServer(ca, json_server) as server:
        toml = f"""
[[providers]]
name = "tls"
type = "openai"
base_url = "https://localhost:{server.port}/v1"
api_key = "sk-upstream-tls"
models = ["gpt-*"]
connect_timeout = 5.0
"""
        app: Gateway = await start_gateway(settings_for(tmp_path / "data", toml))
        try:
            key, key_id = await new_key(app, requests=10, interval=60)
            reply = await call(
                app,
                "POST",
                "/v1/chat/completions",
                body=b'{"model":"gpt-4o","messages":[]}',
                headers=[("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")],
            )
            assert reply.status == 502
            error = reply.json()["error"]
            assert error["code"] == "upstream_unavailable" and "tls" in error["message"]
            assert server.requests == []
            assert (await stored_usage(app, key_id)).failures_5xx == 1
        finally:
            await app.shutdown()


async def test_plain_tcp_upstream_sockets_have_nodelay(clients: list[UpstreamClient]) -> None:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = await started(
            clients,
            UpstreamClient(
                ProviderSettings(
                    name="plain", type="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", models=("m",)
                )
            ),
        )
        resp = await client.post(b"/v1/x", b"{}", [])
        assert await client.read(resp) == b"{}"
        client.release(resp)
        flags = nodelay(client)
        assert len(flags) == 1 and all(flags)
    finally:
        server.close()
        await server.wait_closed()
