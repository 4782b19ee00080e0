"""The hot-path upstream HTTP client: one pooled keep-alive aiohttp session per provider.

Why aiohttp and not httpx here: measured on this machine as a bare proxy on one core
at 16 connections, httpx with its default transport gave about 700 requests/s, httpx
over an aiohttp transport about 2,200 and aiohttp's own client about 5,600 (an empty
Granian ASGI app: about 14,000). httpx stays the client for calls off the hot path.

The session is tuned for a proxy:

* a keep-alive pool (``limit`` = the provider's ``max_connections``, no per-host cap,
  idle connections kept ``keepalive_timeout`` seconds) and a DNS cache;
* no automatic decompression and no ``Accept-Encoding`` of its own: the gateway asks
  upstreams for identity bodies (it reads the ``usage`` of answers) and relays bytes
  as they come;
* no automatic ``User-Agent`` / ``Content-Type`` / ``Accept``: the caller's headers
  go through as they were;
* no cookie jar: a cookie set by an upstream must never reach another caller.

Failures become two exceptions the app maps to 502 and 504, so nothing outside this
module knows which client library is in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import aiohttp

from agentrouter.config import ProviderSettings

__all__ = ["UpstreamClient", "UpstreamResponse", "UpstreamError", "UpstreamUnavailable", "UpstreamTimeout"]

UpstreamResponse = aiohttp.ClientResponse


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time."""


class UpstreamUnavailable(UpstreamError):
    """Connection refused, reset or closed, DNS failure, TLS failure: 502."""


class UpstreamTimeout(UpstreamError):
    """No connection within ``connect_timeout`` or no byte within ``read_timeout``: 504."""


_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class UpstreamClient:
    """One provider's pool. ``start()`` and ``close()`` run on the worker's event loop."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._settings.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=self._settings.keepalive_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            raise_for_status=False,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(self, url: str, body: bytes, headers: Sequence[tuple[str, str]]) -> UpstreamResponse:
        """Send the request and return once the status and headers have arrived.

        The caller owns the response: it must read it (``read`` / ``iter_chunks``) or
        ``release`` it; cancelling the calling task cancels the request.
        """
        session = self._session
        if session is None:
            raise UpstreamUnavailable("the upstream client is closed")
        try:
            return await session.post(url, data=body, headers=headers, allow_redirects=False)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(_describe(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(_describe(exc)) from None

    @staticmethod
    async def read(response: UpstreamResponse) -> bytes:
        try:
            return await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(_describe(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(_describe(exc)) from None

    @staticmethod
    async def iter_chunks(response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The body as the bytes arrive (whatever the network delivered, no re-framing)."""
        content = response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(_describe(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(_describe(exc)) from None

    @staticmethod
    def release(response: UpstreamResponse) -> None:
        """Give the connection back when the body was read completely, else close it
        (which is how an abandoned request is cancelled upstream)."""
        response.release() if response.content.at_eof() else response.close()

    @staticmethod
    def abort(response: UpstreamResponse) -> None:
        """Close the connection now: the upstream sees the request cancelled."""
        response.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return str(exc) or "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
