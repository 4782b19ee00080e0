"""The console's static files, served by the gateway under content-hashed URLs.

At start-up every file of ``static/`` is read once and named by a digest of its
bytes: ``app.css`` is served as ``/static/app.3f9c0a1b2c.css``. A page names its
assets through ``Assets.url("app.css")``, so a changed file gets a new URL and the
old one can be cached for good: the answer carries ``Cache-Control: public,
max-age=31536000, immutable`` and an ``ETag`` (the digest); a request with that
``If-None-Match`` gets ``304``. A URL whose digest is not the current one is a 404
(nothing stale is served under a name that promises to be current). Nothing is
fetched from anywhere else: the console works offline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IMMUTABLE", "Asset", "Assets"]

IMMUTABLE = b"public, max-age=31536000, immutable"
PREFIX = "/static/"

_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    name: str
    """The file's own name (``app.css``)."""
    url: str
    """Its hashed URL (``/static/app.3f9c0a1b2c.css``)."""
    body: bytes
    content_type: bytes
    etag: bytes


class Assets:
    """Every file of one static directory, by name and by hashed URL."""

    def __init__(self, directory: Path) -> None:
        self._by_name: dict[str, Asset] = {}
        self._by_url: dict[str, Asset] = {}
        for path in sorted(directory.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:12]
            stem, dot, suffix = path.name.rpartition(".")
            hashed = f"{stem}.{digest}.{suffix}" if dot else f"{path.name}.{digest}"
            asset = Asset(
                name=path.name,
                url=PREFIX + hashed,
                body=body,
                content_type=_TYPES.get(path.suffix, b"application/octet-stream"),
                etag=f'"{digest}"'.encode(),
            )
            self._by_name[path.name] = asset
            self._by_url[asset.url] = asset

    def url(self, name: str) -> str:
        """The hashed URL of ``name``; a name that is no file is a bug (KeyError)."""
        return self._by_name[name].url

    def find(self, path: str) -> Asset | None:
        """The asset served at ``path`` (a hashed URL), or None."""
        return self._by_url.get(path)

    def names(self) -> list[str]:
        return list(self._by_name)
