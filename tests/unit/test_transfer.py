"""fetch_files: concurrent ranged downloads hashed as they stream, against both store implementations."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from towerlight.errors import ArtifactError
from towerlight.store import ArtifactStore
from towerlight.store.transfer import Expected, fetch_files

PART = 64 * 1024


def stored(store: ArtifactStore, key: str, payload: bytes, tmp_path: Path) -> Expected:
    store.put_bytes(key, payload)
    return Expected(key, tmp_path / key.rsplit("/", 1)[-1], len(payload), hashlib.sha256(payload).hexdigest())


def payload(size: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


class SlowFirstPart:
    """A store whose first part of every object arrives last, so later parts finish before it."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.later_parts_done = threading.Event()
        self.ranges: list[tuple[str, int, int | None]] = []

    def read_range(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        self.ranges.append((key, start, length))
        if start == 0:
            self.later_parts_done.wait(timeout=5)
        yield from self.inner.read_range(key, start, length)
        if start > 0 and length is None:
            self.later_parts_done.set()


def test_files_are_fetched_in_parts_and_verified(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    # GIVEN three stored files: one of many parts, one of exactly one part, one empty
    files = [
        stored(artifact_store, "models/v1/items.hnsw", payload(5 * PART + 123, 1), tmp_path),
        stored(artifact_store, "models/v1/features.json", payload(PART, 2), tmp_path),
        stored(artifact_store, "models/v1/empty.bin", b"", tmp_path),
    ]

    # WHEN they are fetched with small parts and several threads
    fetch_files(artifact_store, files, threads=4, part_bytes=PART)

    # THEN every file holds the stored bytes
    for expected, seed in zip(files[:2], (1, 2), strict=True):
        assert expected.path.read_bytes() == payload(expected.size, seed)
    assert files[2].path.read_bytes() == b""


def test_parts_that_finish_out_of_order_are_hashed_in_order(file_store: str, tmp_path: Path) -> None:
    # GIVEN a file whose first part arrives after all the others
    from towerlight.store import open_store

    inner = open_store(file_store)
    expected = stored(inner, "models/v1/items.hnsw", payload(4 * PART + 10, 3), tmp_path)
    store = SlowFirstPart(inner)

    # WHEN it is fetched
    fetch_files(store, [expected], threads=5, part_bytes=PART)  # type: ignore[arg-type]

    # THEN five ranges were read (the last to the end of the object) and the checksum still matched
    assert sorted(r[1:] for r in store.ranges) == [
        (0, PART),
        (PART, PART),
        (2 * PART, PART),
        (3 * PART, PART),
        (4 * PART, None),
    ]
    assert expected.path.read_bytes() == payload(4 * PART + 10, 3)


def test_a_checksum_mismatch_names_the_file(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    # GIVEN a stored file whose bytes differ from the manifest's sha256 (same size)
    good = stored(artifact_store, "models/v1/items.hnsw", payload(3 * PART, 4), tmp_path)
    artifact_store.put_bytes(good.key, payload(3 * PART, 5))

    # WHEN it is fetched
    with pytest.raises(ArtifactError) as raised:
        fetch_files(artifact_store, [good], part_bytes=PART)

    # THEN the error says which file fails its checksum
    assert "fails its checksum" in raised.value.message
    assert raised.value.details == {"file": "items.hnsw", "key": "models/v1/items.hnsw"}


@pytest.mark.parametrize("actual", [3 * PART - 1, 2 * PART + 5, 3 * PART + 1, 10])
def test_an_object_of_another_size_is_refused(artifact_store: ArtifactStore, tmp_path: Path, actual: int) -> None:
    # GIVEN a manifest entry of 3 parts and a stored object shorter or longer than that
    expected = stored(artifact_store, "models/v1/items.hnsw", payload(3 * PART, 6), tmp_path)
    artifact_store.put_bytes(expected.key, payload(actual, 6))

    # WHEN it is fetched THEN the size mismatch is an ArtifactError naming the file
    with pytest.raises(ArtifactError) as raised:
        fetch_files(artifact_store, [expected], part_bytes=PART)
    assert raised.value.details["file"] == "items.hnsw"


def test_a_missing_object_stops_the_other_transfers(file_store: str, tmp_path: Path) -> None:
    # GIVEN one stored file of many parts and one file missing from the store
    from towerlight.store import open_store

    store = open_store(file_store)
    big = stored(store, "models/v1/items.hnsw", payload(40 * PART, 7), tmp_path)
    missing = Expected("models/v1/gone.npz", tmp_path / "gone.npz", 100 * PART, "0" * 64)
    reads: list[str] = []

    class Counting:
        def read_range(self, key: str, start: int = 0, length: int | None = None) -> Iterator[Any]:
            reads.append(start)
            yield from store.read_range(key, start, length)

    # WHEN both are fetched by one thread (the missing one, listed as bigger, first)
    with pytest.raises(ArtifactError) as raised:
        fetch_files(Counting(), [missing, big], threads=1, part_bytes=PART)  # type: ignore[arg-type]

    # THEN the missing object is the error, and the big file's parts were mostly never requested
    assert raised.value.details["key"] == "models/v1/gone.npz"
    assert reads.count(big.key) < 40
