"""Publishing, promoting, rolling back, pruning and downloading model versions, on every store."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from towerlight.errors import ArtifactError, PointerConflictError, ValidationError, VersionExistsError
from towerlight.store import ArtifactNotFoundError, ArtifactStore, open_store
from towerlight.store.versions import (
    CURRENT_KEY,
    SCHEMA_VERSION,
    current_version,
    download_version,
    list_versions,
    new_version_id,
    promote,
    prune,
    publish_version,
    read_manifest,
    read_pointer,
    rollback,
)

T0 = datetime(2026, 11, 22, 1, 15, tzinfo=UTC)


class RecordingStore:
    """Delegates to a real store and records the name and first argument of each call."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args[0] if args else None))
            return method(*args, **kwargs)

        return recorded


@pytest.fixture
def model_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "items.hnsw": b"\x00\x01index" * 1000,
        "ranker.json": b'{"weights": [0.5, -1.0]}',
        "user_tower.onnx": b"onnx-bytes",
    }
    directory = tmp_path / "out"
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return {name: directory / name for name in files}


def publish_many(store: ArtifactStore, files: dict[str, Path], count: int) -> list[str]:
    """``count`` versions published a minute apart, oldest first."""
    versions = []
    for minute in range(count):
        version = new_version_id(T0 + timedelta(minutes=minute))
        publish_version(store, version, files, {"metrics": {"ndcg@10": minute / 10}})
        versions.append(version)
    return versions


def test_new_version_ids_sort_by_time_and_are_unique() -> None:
    # GIVEN ids made a second apart and twice in the same second
    first = new_version_id(T0)
    later = new_version_id(T0 + timedelta(seconds=1))
    twin = new_version_id(T0)

    # THEN they read as UTC timestamps, sort in time order, and never collide
    assert re.fullmatch(r"20261122T011500Z-[0-9a-f]{6}", first)
    assert first < later and twin < later
    assert first != twin


def test_publish_uploads_files_then_the_manifest_with_checksums(
    artifact_store: ArtifactStore, model_files: dict[str, Path]
) -> None:
    # GIVEN a store that records the order of writes
    store = RecordingStore(artifact_store)

    # WHEN a version is published
    manifest = publish_version(store, "v1", model_files, {"params": {"dim": 32}, "metrics": {"ndcg@10": 0.3}})

    # THEN every file was written immutably before the manifest, which is written last
    writes = [(name, key) for name, key in store.calls if name.startswith("put")]
    assert writes[-1] == ("put_bytes", "models/v1/manifest.json")
    assert {key for _, key in writes[:-1]} == {f"models/v1/{name}" for name in model_files}
    # AND the manifest records the sha256 and size of each file, plus the caller's fields
    for name, path in model_files.items():
        data = path.read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["version"] == "v1" and manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["params"] == {"dim": 32} and "created_at" in manifest
    assert read_manifest(artifact_store, "v1") == manifest
    assert json.loads(artifact_store.get_bytes("models/v1/manifest.json")) == manifest


def test_publish_refuses_an_existing_version(artifact_store: ArtifactStore, model_files: dict[str, Path]) -> None:
    # GIVEN a published version
    publish_version(artifact_store, "v1", model_files, {})

    # WHEN it is published again
    # THEN versions are immutable
    with pytest.raises(VersionExistsError):
        publish_version(artifact_store, "v1", model_files, {})


@pytest.mark.parametrize("name", ["sub/items.hnsw", "..", "a..b", "manifest.json", ".hidden", ""])
def test_publish_refuses_unsafe_file_names(file_store: str, model_files: dict[str, Path], name: str) -> None:
    # GIVEN a file name that could escape the version directory or clash with the manifest
    store = open_store(file_store)

    # WHEN it is published
    with pytest.raises(ValidationError):
        publish_version(store, "v1", {name: model_files["ranker.json"]}, {})

    # THEN nothing was written
    assert store.list_prefixes("models") == []


def test_an_incomplete_version_is_neither_listed_nor_promotable(
    artifact_store: ArtifactStore, model_files: dict[str, Path]
) -> None:
    # GIVEN a version whose publish stopped before the manifest
    artifact_store.put_file("models/v1/items.hnsw", model_files["items.hnsw"], if_none_match=True)

    # WHEN it is listed or promoted
    # THEN it does not exist as far as versions go
    assert list_versions(artifact_store) == []
    with pytest.raises(ArtifactNotFoundError):
        promote(artifact_store, "v1")
    assert current_version(artifact_store) is None


def test_download_verifies_and_reuses_a_complete_copy(
    artifact_store: ArtifactStore, model_files: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a published version
    publish_version(artifact_store, "v1", model_files, {})
    cache = tmp_path / "cache"

    # WHEN it is downloaded twice
    model_dir, manifest = download_version(artifact_store, "v1", cache)
    store = RecordingStore(artifact_store)
    again, _ = download_version(store, "v1", cache)

    # THEN the files match, and the second call reused the verified copy
    assert model_dir == again == cache / "v1"
    for name, path in model_files.items():
        assert (model_dir / name).read_bytes() == path.read_bytes()
    assert manifest["version"] == "v1"
    assert not [call for call in store.calls if call[0] == "read_range"]
    assert [p.name for p in cache.iterdir()] == ["v1"]


def test_download_of_a_subset_fetches_and_verifies_only_those_files(
    artifact_store: ArtifactStore, model_files: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a published version of three files
    publish_version(artifact_store, "v1", model_files, {})
    store = RecordingStore(artifact_store)

    # WHEN only two of them are asked for
    model_dir, _ = download_version(store, "v1", tmp_path / "cache", only=["items.hnsw", "user_tower.onnx"])

    # THEN just those two are fetched and present, byte for byte
    fetched = sorted(call[1].rsplit("/", 1)[-1] for call in store.calls if call[0] == "read_range")
    assert fetched == ["items.hnsw", "user_tower.onnx"]
    assert not (model_dir / "ranker.json").exists()
    assert (model_dir / "items.hnsw").read_bytes() == model_files["items.hnsw"].read_bytes()

    # AND a file the manifest does not list is refused by name
    with pytest.raises(ArtifactError, match=r"item_tower\.onnx"):
        download_version(artifact_store, "v1", tmp_path / "other", only=["item_tower.onnx"])


def test_an_optional_file_an_older_version_lacks_is_skipped(
    artifact_store: ArtifactStore, model_files: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a version published before content.npz existed
    publish_version(artifact_store, "v1", model_files, {})
    # WHEN serving asks for it among its files, as optional
    model_dir, _ = download_version(
        artifact_store, "v1", tmp_path / "cache", only=["items.hnsw", "content.npz"], optional=["content.npz"]
    )
    # THEN the version downloads without it
    assert (model_dir / "items.hnsw").exists() and not (model_dir / "content.npz").exists()


def test_download_replaces_a_corrupted_local_copy(
    artifact_store: ArtifactStore, model_files: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a downloaded version whose local file was then damaged
    publish_version(artifact_store, "v1", model_files, {})
    model_dir, _ = download_version(artifact_store, "v1", tmp_path)
    (model_dir / "ranker.json").write_bytes(b'{"weights": [9.9, -1.0]}')

    # WHEN it is downloaded again
    model_dir, _ = download_version(artifact_store, "v1", tmp_path)

    # THEN the damaged copy was replaced by a verified one
    assert (model_dir / "ranker.json").read_bytes() == model_files["ranker.json"].read_bytes()


def test_download_of_a_corrupted_artifact_names_the_file(
    artifact_store: ArtifactStore, model_files: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a published version whose file was overwritten in the store (same size, other bytes)
    publish_version(artifact_store, "v1", model_files, {})
    original = model_files["ranker.json"].read_bytes()
    artifact_store.put_bytes("models/v1/ranker.json", original.replace(b"0.5", b"9.5"))

    # WHEN it is downloaded
    with pytest.raises(ArtifactError) as raised:
        download_version(artifact_store, "v1", tmp_path / "cache")

    # THEN the error names the file, and no partial copy is left behind
    assert "ranker.json" in str(raised.value) and raised.value.details["file"] == "ranker.json"
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_of_a_truncated_artifact_fails_on_size(
    artifact_store: ArtifactStore, model_files: dict[str, Path], tmp_path: Path
) -> None:
    # GIVEN a published file that was truncated in the store
    publish_version(artifact_store, "v1", model_files, {})
    artifact_store.put_bytes("models/v1/items.hnsw", b"short")

    # WHEN it is downloaded THEN the size mismatch is reported for that file
    with pytest.raises(ArtifactError, match=r"items\.hnsw .* bytes"):
        download_version(artifact_store, "v1", tmp_path)


def test_promote_and_rollback_walk_the_pointer(artifact_store: ArtifactStore, model_files: dict[str, Path]) -> None:
    # GIVEN three versions promoted in turn
    v1, v2, v3 = publish_many(artifact_store, model_files, 3)
    promote(artifact_store, v1, expected_current=None)
    promote(artifact_store, v2, expected_current=v1)
    pointer = promote(artifact_store, v3)

    # THEN CURRENT names the newest and remembers the one before
    assert (pointer["version"], pointer["previous"]) == (v3, v2)
    assert read_pointer(artifact_store)[0] == pointer

    # WHEN rolled back twice
    first = rollback(artifact_store)
    second = rollback(artifact_store)

    # THEN it walks back through history, and refuses to go past the oldest version
    assert (first["version"], first["previous"]) == (v2, v1)
    assert (second["version"], second["previous"]) == (v1, None)
    assert current_version(artifact_store) == v1
    with pytest.raises(ArtifactError, match="no version older"):
        rollback(artifact_store)


def test_promoting_the_current_version_changes_nothing(
    artifact_store: ArtifactStore, model_files: dict[str, Path]
) -> None:
    # GIVEN a promoted version
    (v1,) = publish_many(artifact_store, model_files, 1)
    pointer = promote(artifact_store, v1)

    # WHEN it is promoted again THEN the pointer is untouched
    assert promote(artifact_store, v1) == pointer


def test_rollback_without_previous_uses_the_newest_older_version(
    artifact_store: ArtifactStore, model_files: dict[str, Path]
) -> None:
    # GIVEN CURRENT on the newest version with no previous recorded (first promote ever)
    v1, v2, v3 = publish_many(artifact_store, model_files, 3)
    promote(artifact_store, v3)

    # WHEN rolled back
    pointer = rollback(artifact_store)

    # THEN it lands on the newest version older than CURRENT
    assert (pointer["version"], pointer["previous"]) == (v2, v1)


def test_rollback_with_nothing_promoted_fails(artifact_store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="nothing is promoted"):
        rollback(artifact_store)


def test_promote_with_a_stale_expected_current_conflicts(
    artifact_store: ArtifactStore, model_files: dict[str, Path]
) -> None:
    # GIVEN two operators who both saw v1 as CURRENT
    v1, v2, v3 = publish_many(artifact_store, model_files, 3)
    promote(artifact_store, v1)
    promote(artifact_store, v2, expected_current=v1)

    # WHEN the second one promotes on the strength of what it saw
    with pytest.raises(PointerConflictError):
        promote(artifact_store, v3, expected_current=v1)

    # THEN the first operator's promote stands
    assert current_version(artifact_store) == v2


def test_concurrent_promotes_from_the_same_state_have_one_winner(file_store: str, model_files: dict[str, Path]) -> None:
    # GIVEN eight versions and a CURRENT every promoter has read
    store = open_store(file_store)
    base, *candidates = publish_many(store, model_files, 9)
    promote(store, base)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(candidates))

    def promote_one(version: str) -> None:
        barrier.wait()
        try:
            promote(store, version, expected_current=base)
            outcomes.append("won")
        except PointerConflictError:
            outcomes.append("lost")

    # WHEN they all promote at once
    threads = [threading.Thread(target=promote_one, args=(v,)) for v in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN exactly one flip happened, on top of the base
    assert sorted(outcomes) == ["lost"] * (len(candidates) - 1) + ["won"]
    pointer, _ = read_pointer(store)
    assert pointer is not None and pointer["previous"] == base and pointer["version"] in candidates


def test_list_versions_newest_first_with_metrics(artifact_store: ArtifactStore, model_files: dict[str, Path]) -> None:
    # GIVEN three versions, the middle one current
    v1, v2, v3 = publish_many(artifact_store, model_files, 3)
    promote(artifact_store, v2)

    # WHEN listed
    listed = list_versions(artifact_store)

    # THEN newest first, with their metrics and which one is current
    assert [entry["version"] for entry in listed] == [v3, v2, v1]
    assert [entry["is_current"] for entry in listed] == [False, True, False]
    assert listed[0]["metrics"] == {"ndcg@10": 0.2}
    assert listed[0]["files"] == len(model_files)


def test_prune_keeps_the_newest_and_both_pointed_versions(
    artifact_store: ArtifactStore, model_files: dict[str, Path]
) -> None:
    # GIVEN six versions, CURRENT on the second oldest with the oldest as previous
    versions = publish_many(artifact_store, model_files, 6)
    promote(artifact_store, versions[0])
    promote(artifact_store, versions[1])

    # WHEN pruned down to two
    deleted = prune(artifact_store, keep=2)

    # THEN the two newest survive, and so do CURRENT and previous
    assert sorted(deleted) == versions[2:4]
    assert sorted(entry["version"] for entry in list_versions(artifact_store)) == [
        versions[0],
        versions[1],
        versions[4],
        versions[5],
    ]
    assert artifact_store.list_prefixes("models") == sorted([*versions[:2], *versions[4:]])
    assert artifact_store.exists(CURRENT_KEY)


def test_prune_requires_keeping_at_least_one(artifact_store: ArtifactStore) -> None:
    with pytest.raises(ValidationError):
        prune(artifact_store, keep=0)


def test_rollback_skips_a_pruned_previous(artifact_store: ArtifactStore, model_files: dict[str, Path]) -> None:
    # GIVEN CURRENT whose recorded previous has been deleted from the store
    v1, v2, v3 = publish_many(artifact_store, model_files, 3)
    promote(artifact_store, v1)
    promote(artifact_store, v3)
    artifact_store.delete_prefix(f"models/{v1}")

    # WHEN rolled back THEN the newest older version still present is used
    assert rollback(artifact_store)["version"] == v2
