"""Random tokens stored as digests, and sealing for the TOTP secrets.

A token (session, verification link, reset link, invitation, setup link, pending
second factor) is 32 random bytes from the OS CSPRNG (256 bits, twice the 128 the
issue asks), URL-safe base64, with a short readable prefix naming its kind
(``ars_`` session, ``arv_`` verification, …) so a leaked one is recognised.
Only ``HMAC-SHA256(k, token)`` is stored, with ``k`` derived from the server secret
for this use alone: a copy of the database signs nobody in and opens no link. A
stored digest found by its index is compared again in constant time
(``hmac.compare_digest``) before it counts.

``Sealer`` encrypts the TOTP secrets (which must be recoverable, unlike tokens)
with AES-256-GCM from ``cryptography``, under another key derived from the server
secret (HKDF-SHA256); the user id is the associated data, so a sealed secret copied
to another row does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["TOKEN_BYTES", "Sealer", "TokenDigester", "derive_key", "new_token"]

TOKEN_BYTES: Final = 32
PREFIXES: Final = {
    "session": "ars_",
    "verify": "arv_",
    "reset": "arr_",
    "invite": "ari_",
    "setup": "aru_",
    "second_factor": "arf_",
}
MAX_TOKEN: Final = 128
"""Longer input is not a token of ours: refused before any digest."""


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``, from the server secret (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"agentrouter {purpose}".encode()).derive(secret)


def new_token(kind: str) -> str:
    """A fresh token of ``kind`` (a key of ``PREFIXES``)."""
    return PREFIXES[kind] + secrets.token_urlsafe(TOKEN_BYTES)


class TokenDigester:
    """HMAC-SHA256 under a key derived from the server secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "account tokens v1")

    def digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def token_digest(self, token: object, kind: str) -> bytes | None:
        """The digest of ``token`` when it looks like a token of ``kind``, else None
        (not text, wrong prefix, too long: no lookup needed)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.startswith(PREFIXES[kind]):
            return None
        return self.digest(token)

    @staticmethod
    def same(stored: bytes, computed: bytes) -> bool:
        """Constant-time equality of two digests."""
        return hmac.compare_digest(stored, computed)


class Sealer:
    """AES-256-GCM with a key derived from the server secret; see the module docstring."""

    NONCE: Final = 12

    def __init__(self, secret: bytes, purpose: str = "totp secrets v1") -> None:
        self._aead = AESGCM(derive_key(secret, purpose))

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = secrets.token_bytes(self.NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes | None:
        """The plaintext, or None when ``sealed`` was not made here for ``context``
        (another server secret, another row, damaged)."""
        if len(sealed) <= self.NONCE:
            return None
        try:
            return self._aead.decrypt(sealed[: self.NONCE], sealed[self.NONCE :], context.encode())
        except InvalidTag:
            return None
