"""Key format, digests and the key table, through agentrouter._core."""

from __future__ import annotations

import hmac
import string
import sys
from hashlib import sha256

import pytest

from agentrouter import _core as core
from agentrouter._core import Digester, FakeClock, KeyRecord, KeyTable, RateLimiter

SECRET = bytes(range(32))
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


def test_constants() -> None:
    assert (core.KEY_PREFIX, core.KEY_LENGTH) == ("sk-ar-", 44)
    codes = (
        core.AUTH_OK,
        core.AUTH_MALFORMED,
        core.AUTH_UNKNOWN,
        core.AUTH_REVOKED,
        core.AUTH_EXPIRED,
        core.AUTH_STALE,
    )
    assert codes == (0, 1, 2, 3, 4, 5)


def test_generated_keys_are_well_formed_and_distinct() -> None:
    keys = {core.generate_key() for _ in range(500)}
    assert len(keys) == 500
    for key in keys:
        assert len(key) == 44 and key.startswith("sk-ar-")
        assert set(key[6:]) <= set(ALPHABET)
        assert core.is_well_formed(key)


def test_every_single_character_mutation_is_rejected() -> None:
    key = core.generate_key()
    for i, original in enumerate(key):
        for c in ALPHABET + "-_/é":
            if c != original:
                assert not core.is_well_formed(key[:i] + c + key[i + 1 :]), (i, c)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: "sk-or-" + k[6:],
        lambda k: k[6:],
        lambda k: k[:-1],
        lambda k: k + "0",
        lambda k: "",
        lambda k: k[:10] + "+" + k[11:],
        lambda k: k.upper(),
    ],
)
def test_bad_prefix_length_and_alphabet_are_rejected(mangle) -> None:  # type: ignore[no-untyped-def]
    assert not core.is_well_formed(mangle(core.generate_key()))


def test_display_prefix() -> None:
    key = core.generate_key()
    assert core.display_prefix(key) == key[:12] + "\u2026"


def test_digest_is_hmac_sha256_of_the_whole_key() -> None:
    key = core.generate_key()
    assert Digester(SECRET).digest(key) == hmac.new(SECRET, key.encode(), sha256).digest()
    assert Digester(SECRET).digest("sk-ar-" + "A" * 38).hex() == (
        "d62772497e7c7e76efb4cdee0b13a57d1fd9dfc8f4550e98124c481c7e235c16"
    )
    with pytest.raises(ValueError, match="32 bytes"):
        Digester(b"x" * 31)


@pytest.mark.parametrize("length", [0, 1, 43, 44, 55, 56, 63, 64, 65, 130])
def test_digest_matches_hmac_at_every_length(length: int) -> None:
    # Up to 55 bytes the core hashes the message as one block after the key's pads.
    for secret in (SECRET, bytes(range(100))):
        message = ("sk-ar-" + "x" * length)[:length]
        assert Digester(secret).digest(message) == hmac.new(secret, message.encode(), sha256).digest()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock, capacity=8)


def record(slot: int = 1, tag: int = 11, requests: int | None = 2, expires_at: float | None = None) -> KeyRecord:
    return KeyRecord("key_1", slot, tag, requests, 60.0, expires_at, "all")


def test_key_table_outcomes(limiter: RateLimiter, clock: FakeClock) -> None:
    digester = Digester(SECRET)
    table = KeyTable(digester, limiter)
    key, other = core.generate_key(), core.generate_key()
    limiter.claim_slot(1, 11)
    table.replace_all([(digester.digest(key), record(expires_at=clock.unix + 5))], limiter.generation())
    assert len(table) == 1 and table.generation == 0

    status, rec = table.authenticate(key)
    assert status == core.AUTH_OK and rec is not None
    assert (rec.id, rec.slot, rec.tag, rec.requests, rec.interval, rec.scope) == ("key_1", 1, 11, 2, 60.0, "all")
    assert table.authenticate(key[:-1] + ("0" if key[-1] != "0" else "1")) == (core.AUTH_MALFORMED, None)
    assert table.authenticate(other) == (core.AUTH_UNKNOWN, None)
    limiter.bump_generation()
    assert table.authenticate(other) == (core.AUTH_STALE, None)

    # check = authenticate + the key's own bucket (2 per minute).
    assert [table.check(key)[2].allowed for _ in range(3)] == [True, True, False]  # type: ignore[union-attr]
    assert table.check(other)[2] is None
    with pytest.raises(ValueError):
        table.check(key, cost=0)

    clock.advance(5)
    assert table.authenticate(key)[0] == core.AUTH_EXPIRED
    limiter.revoke_slot(1, 11)
    assert table.authenticate(key)[0] == core.AUTH_REVOKED


def test_the_table_hands_back_the_records_it_was_given(limiter: RateLimiter) -> None:
    digester = Digester(SECRET)
    table = KeyTable(digester, limiter)
    key = core.generate_key()
    limiter.claim_slot(1, 11)
    rec = record()
    table.replace_all([(digester.digest(key), rec)], 0)
    held = sys.getrefcount(rec)
    for _ in range(100):
        assert table.authenticate(key)[1] is rec
        assert table.check(key)[1] is rec
    assert sys.getrefcount(rec) == held
    table.replace_all([], 0)
    assert sys.getrefcount(rec) == held - 1


def test_a_reused_slot_revokes_the_old_record(limiter: RateLimiter) -> None:
    digester = Digester(SECRET)
    table = KeyTable(digester, limiter)
    key = core.generate_key()
    limiter.claim_slot(1, 11)
    table.replace_all([(digester.digest(key), record())], 0)
    limiter.claim_slot(1, 12)  # deleted, slot handed to a new key
    assert table.authenticate(key)[0] == core.AUTH_REVOKED


def test_the_whole_digest_must_match(limiter: RateLimiter) -> None:
    digester = Digester(SECRET)
    table = KeyTable(digester, limiter)
    key = core.generate_key()
    limiter.claim_slot(1, 11)
    near = bytearray(digester.digest(key))
    near[-1] ^= 1
    table.replace_all([(bytes(near), record())], 0)
    assert table.authenticate(key) == (core.AUTH_UNKNOWN, None)


def test_replace_all_validates(limiter: RateLimiter) -> None:
    table = KeyTable(Digester(SECRET), limiter)
    with pytest.raises(ValueError, match="32 bytes"):
        table.replace_all([(b"short", record())], 0)
    with pytest.raises(IndexError):
        table.replace_all([(b"\0" * 32, record(slot=8))], 0)
    with pytest.raises(ValueError):
        record(tag=0)
    with pytest.raises(ValueError):
        KeyRecord("k", 0, 1, 0, 60.0, None, "all")
    unlimited = KeyRecord("k", 0, 1, None, 0.0, None, "all")  # the interval is ignored without a limit
    assert unlimited.requests is None
