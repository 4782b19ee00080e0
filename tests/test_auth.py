"""The one key authenticator (agentrouter.auth): header rules, refusals and their
messages, the scope as a parameter, reloads of the key table, the rate-limit headers."""

from __future__ import annotations

import asyncio

from agentrouter._core import KeyTable
from agentrouter.auth import (
    INFERENCE_SCOPE,
    MANAGE_SCOPE,
    KeyAuthenticator,
    Refusal,
    key_headers,
    rate_limit_headers,
)
from agentrouter.core import Core


def bearer(raw: str) -> bytes:
    return f"Bearer {raw}".encode()


async def test_either_header_or_the_same_key_in_both(core: Core) -> None:
    raw = (await core.keys.create()).key
    auth = core.auth
    for authorization, x_api_key in (
        (bearer(raw), None),
        (None, raw.encode()),
        (bearer(raw), raw.encode()),  # the same key twice is not ambiguous
        (b"bearer  " + raw.encode() + b" ", None),
        (b"Basic dXNlcjpwYXNz", raw.encode()),  # a proxy's own credentials beside the key
    ):
        result = await auth.authenticate(authorization, x_api_key, INFERENCE_SCOPE)
        assert result.refusal is None, (authorization, x_api_key, result.message)
        assert result.caller_id is not None


async def test_ambiguous_credentials_are_refused_and_say_why(core: Core) -> None:
    one = (await core.keys.create()).key
    two = (await core.keys.create()).key
    auth = core.auth
    for headers in (
        [(b"authorization", bearer(one)), (b"authorization", bearer(two))],
        [(b"authorization", bearer(one)), (b"authorization", bearer(one))],
        [(b"x-api-key", one.encode()), (b"x-api-key", two.encode())],
    ):
        result = await auth.authenticate(*key_headers(headers), INFERENCE_SCOPE)
        assert result.refusal is Refusal.AMBIGUOUS and result.refusal.status == 401
        assert "more than one Authorization or x-api-key header" in result.message
        assert result.record is None and result.decision is None  # counted for no key
    result = await auth.authenticate(bearer(one), two.encode(), INFERENCE_SCOPE)
    assert result.refusal is Refusal.AMBIGUOUS
    assert "carry different keys" in result.message
    assert one[7:] not in result.message and two[7:] not in result.message


async def test_missing_and_unsupported_scheme(core: Core) -> None:
    auth = core.auth
    for authorization, x_api_key in ((None, None), (b"", None), (b"Bearer", None), (None, b"  ")):
        result = await auth.authenticate(authorization, x_api_key, INFERENCE_SCOPE)
        assert result.refusal is Refusal.MISSING, (authorization, x_api_key)
    result = await auth.authenticate(b"Basic dXNlcjpwYXNz", None, INFERENCE_SCOPE)
    assert result.refusal is Refusal.NOT_BEARER and "Unsupported Authorization scheme" in result.message


async def test_a_deleted_key_is_refused_as_deleted_after_the_table_reloads(core: Core) -> None:
    created = await core.keys.create()
    auth = core.auth
    assert (await auth.authenticate(bearer(created.key), None, INFERENCE_SCOPE)).refusal is None
    await core.keys.delete(created.row.id)
    result = await auth.authenticate(bearer(created.key), None, INFERENCE_SCOPE)
    assert result.refusal is Refusal.DELETED and "the key has been deleted" in result.message
    assert auth.table.generation == core.limiter.generation(), "the deletion made it reload"
    assert len(auth.table) == 0 and auth.table.tombstones == 1
    # And a process that never saw the key alive says the same.
    fresh = KeyAuthenticator(core.new_table(), core, core.limiter.generation)
    result = await fresh.authenticate(None, created.key.encode(), INFERENCE_SCOPE)
    assert result.refusal is Refusal.DELETED, result.message


async def test_the_scope_is_a_parameter(core: Core) -> None:
    manage = (await core.keys.create(scope="manage")).key
    inference = (await core.keys.create()).key
    auth = core.auth
    assert (await auth.authenticate(bearer(manage), None, MANAGE_SCOPE)).refusal is None
    wrong = await auth.authenticate(bearer(manage), None, INFERENCE_SCOPE)
    assert wrong.refusal is Refusal.WRONG_SCOPE and wrong.refusal.status == 403
    assert "scope 'manage'" in wrong.message and "use a key with scope 'inference'" in wrong.message
    assert wrong.record is not None, "a valid key of the wrong scope is counted for that key"
    wrong = await auth.authenticate(bearer(inference), None, MANAGE_SCOPE)
    assert wrong.refusal is Refusal.WRONG_SCOPE and "agentrouter keys create --scope manage" in wrong.message


async def test_rate_limited_with_every_header(core: Core) -> None:
    raw = (await core.keys.create(requests=1, interval=60)).key
    auth = core.auth
    first = await auth.authenticate(bearer(raw), None, INFERENCE_SCOPE)
    assert first.refusal is None
    names = [n for n, _ in rate_limit_headers(first.decision)]
    assert names == [b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset"]
    refused = await auth.authenticate(bearer(raw), None, INFERENCE_SCOPE)
    assert refused.refusal is Refusal.RATE_LIMITED and refused.refusal.status == 429
    headers = dict(rate_limit_headers(refused.decision))
    assert headers[b"retry-after"] == b"60" and headers[b"retry-after-ms"] == b"60000"
    assert rate_limit_headers(None) == []


async def test_reloads_are_single_flight_on_a_generation_change(core: Core) -> None:
    loads = 0

    class Counting:
        async def load_table(self, table: KeyTable) -> None:
            nonlocal loads
            loads += 1
            await asyncio.sleep(0)  # let the other callers arrive while it runs
            await core.load_table(table)

    auth = KeyAuthenticator(core.new_table(), Counting(), core.limiter.generation)
    raw = (await core.keys.create()).key
    results = await asyncio.gather(*(auth.authenticate(bearer(raw), None, INFERENCE_SCOPE) for _ in range(20)))
    assert [r.refusal for r in results] == [None] * 20
    assert loads == 1
    # A key created meanwhile (the generation moved): one more reload, then it works.
    newer = (await core.keys.create()).key
    results = await asyncio.gather(*(auth.authenticate(bearer(newer), None, INFERENCE_SCOPE) for _ in range(5)))
    assert [r.refusal for r in results] == [None] * 5
    assert loads == 2
