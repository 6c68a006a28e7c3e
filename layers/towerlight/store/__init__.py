"""Artifact stores: one interface (``ArtifactStore``), a local directory and an S3 implementation.

>>> store = open_store("file:///tmp/towerlight-store")
>>> store = open_store("s3://my-bucket/towerlight/prod")
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from towerlight.errors import ConfigurationError
from towerlight.store.base import ArtifactNotFoundError, ArtifactStore

__all__ = ["ArtifactNotFoundError", "ArtifactStore", "open_store"]


def open_store(uri: str) -> ArtifactStore:
    """The store for ``file:///abs/dir`` or ``s3://bucket/prefix`` (boto3 is imported only for s3)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigurationError(f"store URI {uri!r} must be file:///absolute/dir")
        from towerlight.store.local import LocalStore

        return LocalStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigurationError(f"store URI {uri!r} has no bucket (s3://bucket/prefix)")
        from towerlight.store.s3 import S3Store

        return S3Store(parts.netloc, unquote(parts.path))
    raise ConfigurationError(f"unsupported store URI {uri!r}: use file:///dir or s3://bucket/prefix")
