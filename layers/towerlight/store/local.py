"""``file:///dir`` artifact store: a local directory with the same atomicity guarantees as S3.

Readers never see a partial object (write to a temporary file, then ``os.replace``/``os.link``); the
etag is the sha256 of the content; compare-and-swap holds an ``fcntl`` lock beside the object.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from towerlight.errors import ArtifactError, PointerConflictError, VersionExistsError
from towerlight.store.base import CHUNK_BYTES, ArtifactNotFoundError, check_key, check_prefix

logger = logging.getLogger(__name__)


class LocalStore:
    """An ``ArtifactStore`` rooted at a local directory (created on first write).

    >>> store = LocalStore(Path("/tmp/towerlight-store"))
    >>> store.put_bytes("models/CURRENT", b"{}")
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.uri = root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.uri}", {"key": key}) from exc
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {key!r}: {exc}", {"key": key}) from exc

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False) -> None:
        with self._staged(key) as (tmp, target):
            tmp.write_bytes(data)
            self._commit(tmp, target, key, if_none_match=if_none_match)

    def put_file(self, key: str, path: Path, *, if_none_match: bool = False) -> None:
        with self._staged(key) as (tmp, target):
            try:
                shutil.copyfile(path, tmp)
            except OSError as exc:
                raise ArtifactError(f"cannot read local file {path}: {exc}", {"key": key}) from exc
            self._commit(tmp, target, key, if_none_match=if_none_match)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> None:
        with self._locked(key):
            try:
                _, current = self.get_with_etag(key)
            except ArtifactNotFoundError:
                current = None
            if current != etag:
                raise PointerConflictError(
                    f"{key!r} changed since it was read (compare-and-swap lost)",
                    {"key": key, "expected_etag": etag, "actual_etag": current},
                )
            try:
                self.put_bytes(key, data, if_none_match=etag is None)
            except VersionExistsError as exc:
                raise PointerConflictError(f"{key!r} was created concurrently", {"key": key}) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._path(key).unlink()

    def list_prefixes(self, prefix: str) -> list[str]:
        directory = self.root / check_prefix(prefix)
        try:
            children = list(directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(c.name for c in children if c.is_dir() and not c.name.startswith("."))

    def delete_prefix(self, prefix: str) -> None:
        directory = self.root / check_prefix(prefix)
        if not directory.is_dir():
            return
        # Rename first so readers see the whole prefix vanish at once, never half of it.
        doomed = directory.with_name(f".deleting-{directory.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(directory, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def read_range(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.uri}", {"key": key}) from exc
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {key!r}: {exc}", {"key": key}) from exc
        with handle:
            try:
                handle.seek(start)
                left = length
                while left is None or left > 0:
                    chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
                    if not chunk:
                        return
                    if left is not None:
                        left -= len(chunk)
                    yield chunk
            except OSError as exc:
                raise ArtifactError(f"cannot read artifact {key!r}: {exc}", {"key": key}) from exc

    @contextlib.contextmanager
    def _staged(self, key: str) -> Iterator[tuple[Path, Path]]:
        """A temporary file beside the target (same filesystem, so the final rename is atomic)."""
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {key!r}: {exc}", {"key": key}) from exc
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp, target
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {key!r}: {exc}", {"key": key}) from exc
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _commit(tmp: Path, target: Path, key: str, *, if_none_match: bool) -> None:
        if not if_none_match:
            os.replace(tmp, target)
            return
        try:
            # link() fails if the target exists, and the target appears complete or not at all.
            os.link(tmp, target)
        except FileExistsError as exc:
            raise VersionExistsError(f"artifact {key!r} already exists", {"key": key}) from exc

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        target = self._path(key)
        lock_path = target.with_name(f".{target.name}.lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = lock_path.open("a")
        except OSError as exc:
            raise ArtifactError(f"cannot lock {key!r}: {exc}", {"key": key}) from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
