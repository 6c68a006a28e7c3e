"""Concurrent, verified downloads: every file of a set fetched at once, big ones in ranged parts, each hashed
while it streams in.

A file of ``size`` bytes is split into parts of ``part_bytes`` (the last part reads to the end of the
object, so an object longer than expected is noticed); parts of all files share one pool of threads.
Bytes are hashed in file order as they arrive: a part that streams right after the bytes already hashed
feeds the digest chunk by chunk, and a part that finished early is hashed from the page cache once the
parts before it are in. The first failure stops every other transfer and is raised; the caller discards
the partial files.

Example::

    >>> fetch_files(store, [Expected("models/v1/items.hnsw", Path("/tmp/v1/items.hnsw"), 52_000_000, "ab12…")])
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from towerlight.errors import ArtifactError
from towerlight.store.base import CHUNK_BYTES, ArtifactStore

DOWNLOAD_THREADS = 8
# Files above this are read in ranged parts. One S3 connection gives ~90 MB/s, so 8-16 MB parts are
# faster there for big files; but moto's server (the benchmark's S3) copies the whole object for
# every ranged GET, which makes small parts slower than one stream per file. TOWERLIGHT_DOWNLOAD_PART_MB
# (Settings.download_part_bytes) overrides it.
PART_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Expected:
    """A file to fetch: the store key, where it goes, and what the manifest says it is."""

    key: str
    path: Path
    size: int
    sha256: str


class _Aborted(Exception):
    """Another transfer failed: this one stops without an error of its own."""


class _FileDownload:
    """One file being written by several part transfers and hashed in order."""

    def __init__(self, expected: Expected, part_bytes: int) -> None:
        self.expected = expected
        starts = range(0, max(expected.size, 1), part_bytes)
        # Every part but the last reads exactly part_bytes; the last reads to the end of the object.
        self.parts: list[tuple[int, int | None]] = [(s, part_bytes) for s in starts[:-1]] + [(starts[-1], None)]
        self.ends: list[int | None] = [None] * len(self.parts)  # set when a part is complete
        self.digest = hashlib.sha256()
        self.hashed_to = 0
        self.lock = threading.Lock()
        self.fd = os.open(expected.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)  # read back to hash

    def fetch(self, store: ArtifactStore, index: int, abort: threading.Event) -> None:
        start, length = self.parts[index]
        offset = start
        try:
            for chunk in store.read_range(self.expected.key, start, length):
                if abort.is_set():
                    raise _Aborted
                _write_all(self.fd, chunk, offset)
                with self.lock:
                    if self.hashed_to == offset:  # the bytes just before are hashed: hash these now
                        self.digest.update(chunk)
                        self.hashed_to += len(chunk)
                offset += len(chunk)
        except ArtifactError as exc:  # the same error, naming the file as every other one here does
            raise type(exc)(exc.message, {"file": self.expected.path.name, "key": self.expected.key}) from exc
        if length is not None and offset - start != length:
            raise self._error(
                f"{self.expected.key} returned {offset - start} bytes from byte {start}, expected {length}: "
                f"the object is not the {self.expected.size} bytes the manifest lists"
            )
        with self.lock:
            self.ends[index] = offset
            self._hash_completed_parts()

    def _hash_completed_parts(self) -> None:
        """Hash, from the file, the complete parts that now follow the bytes already hashed."""
        for end in self.ends:
            if end is None:
                return
            while self.hashed_to < end:
                chunk = os.pread(self.fd, min(CHUNK_BYTES, end - self.hashed_to), self.hashed_to)
                if not chunk:
                    raise self._error(f"{self.expected.key} could not be read back while hashing")
                self.digest.update(chunk)
                self.hashed_to += len(chunk)

    def verify(self) -> None:
        """Size and sha256 against the manifest; ``ArtifactError`` naming the file otherwise."""
        expected, size = self.expected, self.ends[-1]
        if size != expected.size or self.hashed_to != size:
            raise self._error(f"{expected.key} has {size} bytes, expected {expected.size}")
        sha256 = self.digest.hexdigest()
        if sha256 != expected.sha256:
            raise self._error(f"{expected.key} fails its checksum (sha256 {sha256}, expected {expected.sha256})")

    def close(self) -> None:
        os.close(self.fd)

    def _error(self, message: str) -> ArtifactError:
        return ArtifactError(message, {"file": self.expected.path.name, "key": self.expected.key})


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def fetch_files(
    store: ArtifactStore,
    files: Sequence[Expected],
    *,
    threads: int | None = None,
    part_bytes: int | None = None,
) -> None:
    """Download ``files`` concurrently and verify each against its size and sha256.

    ``threads`` and ``part_bytes`` default to ``DOWNLOAD_THREADS`` and ``PART_BYTES``.

    Raises the first ``ArtifactError`` (a missing object, a size or checksum mismatch, a transfer error);
    the other transfers are then stopped. Files already written are left for the caller to remove.
    """
    threads = DOWNLOAD_THREADS if threads is None else threads
    part_bytes = PART_BYTES if part_bytes is None else part_bytes
    if part_bytes < 1 or threads < 1:
        raise ValueError("threads and part_bytes must be positive")
    downloads: list[_FileDownload] = []
    try:
        for expected in sorted(files, key=lambda f: -f.size):  # biggest first: they finish last
            downloads.append(_FileDownload(expected, part_bytes))
        abort = threading.Event()
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="towerlight-download") as pool:
            futures: list[Future[None]] = [
                pool.submit(download.fetch, store, index, abort)
                for download in downloads
                for index in range(len(download.parts))
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                abort.set()
                pool.shutdown(wait=True, cancel_futures=True)
                error = failed.exception()
                raise error if isinstance(error, ArtifactError) else ArtifactError(f"download failed: {error}")
        for download in downloads:
            download.verify()
    except OSError as exc:
        raise ArtifactError(f"cannot write a downloaded file: {exc}") from exc
    finally:
        for download in downloads:
            download.close()
