"""The limiter's lean pipelined Redis connection (agentrouter.limits.resp): the RESP2
parser on every reply type and on replies split anywhere, calls pipelined in order,
the timeout failing every waiting call and the next call reconnecting, a cancelled
call keeping the others in step, AUTH and SELECT from the URL, against a real
redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from agentrouter.limits.resp import RespConnection, _Incomplete, encode, parse
from tests.services import RedisServers


def test_encode() -> None:
    assert encode(("SET", b"k", 12)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    assert encode(("GET", "é")) == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"


REPLIES = [
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string holding CRLF
    (b"+OK\r\n", b"OK"),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n:1\r\n$-1\r\n*2\r\n$1\r\nx\r\n:2\r\n", [1, None, [b"x", 2]]),
]


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_every_reply_type_whole_and_cut_anywhere(wire: bytes, value: object) -> None:
    assert parse(wire, 0) == (value, len(wire))
    assert parse(b"junk" + wire + b":1\r\n", 4) == (value, 4 + len(wire))
    for cut in range(len(wire)):
        with pytest.raises(_Incomplete):
            parse(wire[:cut], 0)


def test_an_error_reply_is_a_value_not_a_raise() -> None:
    value, end = parse(b"-ERR Function not found\r\n", 0)
    assert isinstance(value, ResponseError) and "Function not found" in str(value) and end == 25


async def test_calls_are_pipelined_in_order_and_errors_are_per_call(redis_url: str) -> None:
    conn = RespConnection(redis_url, timeout=2.0)
    try:
        results = await asyncio.gather(
            *(conn.call("INCR", "n") for _ in range(200)),
            conn.call("HSET", "n", "f", "v"),  # WRONGTYPE: that call alone fails
            return_exceptions=True,
        )
        assert results[:200] == list(range(1, 201))
        assert isinstance(results[200], ResponseError) and "WRONGTYPE" in str(results[200])
        assert await conn.call("GET", "n") == b"200"
        big = b"x" * 300_000  # a reply across many reads
        assert await conn.call("SET", "big", big) == b"OK"
        assert await conn.call("GET", "big") == big
    finally:
        conn.close()


async def test_a_cancelled_call_leaves_the_others_in_step(redis_url: str) -> None:
    conn = RespConnection(redis_url, timeout=2.0)
    try:
        await conn.call("SET", "a", "1")
        first = asyncio.ensure_future(conn.call("BLPOP", "nothing", "0.2"))  # answered after 0.2 s
        second = asyncio.ensure_future(conn.call("GET", "a"))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == b"1"  # its own reply, not BLPOP's
        assert await conn.call("INCR", "c") == 1
    finally:
        conn.close()


async def test_a_hung_server_fails_every_waiting_call_at_the_timeout_then_it_reconnects(
    redis_servers: RedisServers,
) -> None:
    server = redis_servers.start()
    conn = RespConnection(server.url, timeout=0.2)
    try:
        assert await conn.call("PING") == b"PONG"
        server.pause()
        started = time.monotonic()
        results = await asyncio.gather(*(conn.call("INCR", "k") for _ in range(5)), return_exceptions=True)
        assert time.monotonic() - started < 0.2 + 0.15
        assert all(isinstance(r, TimeoutError) for r in results), results
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # a new connection: accepted by the kernel, never answered
            await conn.call("PING")
        assert time.monotonic() - started < 0.2 + 0.15
        server.resume()
        assert await conn.call("PING") == b"PONG"
        server.kill()
        with pytest.raises(ConnectionError):
            await conn.call("PING")
        server.start()
        assert await conn.call("GET", "k") is None  # a new, empty server: nothing was replayed
    finally:
        conn.close()


async def test_auth_and_db_from_the_url(redis_servers: RedisServers) -> None:
    server = redis_servers.start()
    base = f"127.0.0.1:{server.port}"
    setup = aioredis.Redis.from_url(server.url)
    try:
        await setup.config_set("requirepass", "s3cret")  # after start: the fixture's readiness PING needs none
    finally:
        await setup.aclose()
    for url in (f"redis://:s3cret@{base}/3", f"redis://default:s3cret@{base}/3"):
        conn = RespConnection(url, timeout=1.0)
        try:
            assert await conn.call("SET", "where", url[-1]) == b"OK"
        finally:
            conn.close()
    check = aioredis.Redis.from_url(f"redis://:s3cret@{base}/3")
    try:
        assert await check.get("where") == b"3"
    finally:
        await check.aclose()
    conn = RespConnection(f"redis://:wrong@{base}/0", timeout=1.0)
    try:
        with pytest.raises(ResponseError):
            await conn.call("PING")
    finally:
        conn.close()


@pytest.mark.parametrize("wire", [b"$-2\r\n", b"*-2\r\n", b"*1\r\n$-3\r\n"])
def test_a_length_below_minus_one_is_refused(wire: bytes) -> None:
    # No server sends one; redis-py reads them as garbage (tests/test_limits_resp_differential.py).
    with pytest.raises(ConnectionError):
        parse(wire, 0)
