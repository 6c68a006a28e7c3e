"""The artifact store interface: what the offline job and the serving code need from S3 or a local directory.

Keys are relative, ``/``-separated paths (``models/20261122T011500Z-a1b2c3/items.hnsw``). Every
implementation raises only ``towerlight.errors`` exceptions: ``ArtifactNotFoundError`` for a missing
object, ``VersionExistsError`` when an ``if_none_match`` write finds the object, ``PointerConflictError``
when a compare-and-swap loses, ``ArtifactError`` for anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from towerlight.errors import ArtifactError

CHUNK_BYTES = 1024 * 1024


class ArtifactNotFoundError(ArtifactError):
    """The object does not exist (a missing key is an ``ArtifactError`` like any other)."""

    code = "artifact_not_found"


@runtime_checkable
class ArtifactStore(Protocol):
    """A flat key/value object store with conditional writes (S3 semantics)."""

    uri: str

    def get_bytes(self, key: str) -> bytes:
        """The object's content; ``ArtifactNotFoundError`` when missing."""
        ...

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The content and an opaque etag to pass to ``put_if_match``."""
        ...

    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False) -> None:
        """Write an object atomically; with ``if_none_match``, ``VersionExistsError`` if it exists."""
        ...

    def put_file(self, key: str, path: Path, *, if_none_match: bool = False) -> None:
        """``put_bytes`` for a local file, streamed rather than read into memory."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> None:
        """Compare-and-swap: write only if the object still has ``etag`` (``None``: must not exist).

        Raises ``PointerConflictError`` otherwise.
        """
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove one object (no error when already absent)."""
        ...

    def list_prefixes(self, prefix: str) -> list[str]:
        """Names of the immediate child "directories" of ``prefix``, sorted: ``["v1", "v2"]``."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix/``."""
        ...

    def read_range(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The object's bytes from ``start`` (``length`` of them, or to the end), streamed in chunks of at
        most ``CHUNK_BYTES``; ``ArtifactNotFoundError`` when missing. A shorter object yields fewer bytes.
        """
        ...


def check_key(key: str) -> str:
    """Reject keys that could escape the store root or that S3 and a filesystem would read differently.

    >>> check_key("models/v1/manifest.json")
    'models/v1/manifest.json'
    """
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ArtifactError(f"invalid artifact key {key!r}", details={"key": key})
    return key


def check_prefix(prefix: str) -> str:
    """A non-empty directory-like prefix, returned with its trailing ``/``.

    >>> check_prefix("models")
    'models/'
    """
    return check_key(prefix.rstrip("/")) + "/"


def sha256_file(path: Path) -> tuple[str, int]:
    """The sha256 hex digest and size in bytes of a local file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
