"""The ArtifactStore contract, run against every implementation (file://, and s3:// on moto's server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from towerlight.errors import (
    ArtifactError,
    ConfigurationError,
    PointerConflictError,
    VersionExistsError,
)
from towerlight.store import ArtifactNotFoundError, ArtifactStore, open_store
from towerlight.store.base import CHUNK_BYTES
from towerlight.store.local import LocalStore
from towerlight.store.s3 import S3Store, s3_client
from towerlight.store.versions import promote, publish_version


def test_put_then_get_returns_the_bytes(artifact_store: ArtifactStore) -> None:
    # GIVEN an object written to the store
    artifact_store.put_bytes("models/v1/ranker.json", b'{"w": [1, 2]}')

    # WHEN it is read back
    data = artifact_store.get_bytes("models/v1/ranker.json")

    # THEN the content is unchanged and the object exists
    assert data == b'{"w": [1, 2]}'
    assert artifact_store.exists("models/v1/ranker.json")


def test_plain_put_overwrites(artifact_store: ArtifactStore) -> None:
    # GIVEN an existing object
    artifact_store.put_bytes("notes/a", b"old")

    # WHEN it is written again without a condition
    artifact_store.put_bytes("notes/a", b"new")

    # THEN the new content wins
    assert artifact_store.get_bytes("notes/a") == b"new"


def test_if_none_match_refuses_an_existing_object(artifact_store: ArtifactStore) -> None:
    # GIVEN an immutable object
    artifact_store.put_bytes("models/v1/items.hnsw", b"first", if_none_match=True)

    # WHEN something tries to write it again with if_none_match
    with pytest.raises(VersionExistsError) as raised:
        artifact_store.put_bytes("models/v1/items.hnsw", b"second", if_none_match=True)

    # THEN the write is refused, names the key, and the original content stays
    assert raised.value.details["key"] == "models/v1/items.hnsw"
    assert artifact_store.get_bytes("models/v1/items.hnsw") == b"first"


def test_put_file_streams_a_local_file(artifact_store: ArtifactStore, tmp_path: Path) -> None:
    # GIVEN a local file of a few megabytes
    source = tmp_path / "items.npz"
    source.write_bytes(bytes(range(256)) * 12_000)

    # WHEN it is uploaded, then uploaded again with if_none_match
    artifact_store.put_file("models/v1/items.npz", source, if_none_match=True)
    with pytest.raises(VersionExistsError):
        artifact_store.put_file("models/v1/items.npz", source, if_none_match=True)

    # THEN the stored object equals the file
    assert artifact_store.get_bytes("models/v1/items.npz") == source.read_bytes()


def test_compare_and_swap_succeeds_with_the_current_etag(artifact_store: ArtifactStore) -> None:
    # GIVEN a pointer created with "must not exist", then read with its etag
    artifact_store.put_if_match("models/CURRENT", b'{"version": "v1"}', None)
    _, etag = artifact_store.get_with_etag("models/CURRENT")

    # WHEN it is swapped with that etag
    artifact_store.put_if_match("models/CURRENT", b'{"version": "v2"}', etag)

    # THEN the new content is stored and the etag changed
    data, new_etag = artifact_store.get_with_etag("models/CURRENT")
    assert data == b'{"version": "v2"}'
    assert new_etag != etag


def test_compare_and_swap_with_a_stale_etag_conflicts(artifact_store: ArtifactStore) -> None:
    # GIVEN two writers that read the same pointer
    artifact_store.put_bytes("models/CURRENT", b'{"version": "v1"}')
    _, etag = artifact_store.get_with_etag("models/CURRENT")
    artifact_store.put_if_match("models/CURRENT", b'{"version": "v2"}', etag)

    # WHEN the second one writes with the etag it read
    with pytest.raises(PointerConflictError):
        artifact_store.put_if_match("models/CURRENT", b'{"version": "v3"}', etag)

    # THEN the first writer's value stays
    assert artifact_store.get_bytes("models/CURRENT") == b'{"version": "v2"}'


def test_compare_and_swap_expecting_absence_conflicts_when_present(artifact_store: ArtifactStore) -> None:
    # GIVEN an existing pointer
    artifact_store.put_bytes("models/CURRENT", b'{"version": "v1"}')

    # WHEN a writer expects it not to exist (etag None)
    with pytest.raises(PointerConflictError):
        artifact_store.put_if_match("models/CURRENT", b'{"version": "v2"}', None)

    # THEN nothing changed
    assert artifact_store.get_bytes("models/CURRENT") == b'{"version": "v1"}'


def test_compare_and_swap_on_a_deleted_object_conflicts(artifact_store: ArtifactStore) -> None:
    # GIVEN a pointer read, then deleted by someone else
    artifact_store.put_bytes("models/CURRENT", b'{"version": "v1"}')
    _, etag = artifact_store.get_with_etag("models/CURRENT")
    artifact_store.delete("models/CURRENT")

    # WHEN the reader swaps with its etag
    # THEN it lost the race
    with pytest.raises(PointerConflictError):
        artifact_store.put_if_match("models/CURRENT", b'{"version": "v2"}', etag)


def test_list_prefixes_returns_immediate_children(artifact_store: ArtifactStore) -> None:
    # GIVEN objects at several depths
    for key in ("models/v2/a", "models/v1/a", "models/v1/sub/b", "models/CURRENT", "other/x"):
        artifact_store.put_bytes(key, b"x")

    # WHEN the children of models/ are listed (with or without the trailing slash)
    # THEN only the directory-like names directly under it come back, sorted
    assert artifact_store.list_prefixes("models") == ["v1", "v2"]
    assert artifact_store.list_prefixes("models/") == ["v1", "v2"]
    assert artifact_store.list_prefixes("models/v1") == ["sub"]
    assert artifact_store.list_prefixes("absent") == []


def test_delete_prefix_removes_everything_under_it_only(artifact_store: ArtifactStore) -> None:
    # GIVEN two versions
    for key in ("models/v1/a", "models/v1/sub/b", "models/v10/a", "models/v2/a"):
        artifact_store.put_bytes(key, b"x")

    # WHEN one is deleted
    artifact_store.delete_prefix("models/v1")

    # THEN its objects are gone, a sibling sharing the name's start is not
    assert artifact_store.list_prefixes("models") == ["v10", "v2"]
    assert not artifact_store.exists("models/v1/a")
    assert not artifact_store.exists("models/v1/sub/b")
    assert artifact_store.exists("models/v10/a")
    artifact_store.delete_prefix("models/v1")  # and deleting again is harmless


def test_delete_removes_one_object(artifact_store: ArtifactStore) -> None:
    # GIVEN an object
    artifact_store.put_bytes("models/v1/manifest.json", b"{}")

    # WHEN it is deleted (twice)
    artifact_store.delete("models/v1/manifest.json")
    artifact_store.delete("models/v1/manifest.json")

    # THEN it no longer exists
    assert not artifact_store.exists("models/v1/manifest.json")


@pytest.mark.parametrize("operation", ["get_bytes", "get_with_etag", "read_range"])
def test_missing_key_raises_artifact_error_naming_it(
    artifact_store: ArtifactStore, operation: str, tmp_path: Path
) -> None:
    # GIVEN an empty store
    # WHEN a missing object is read
    with pytest.raises(ArtifactError) as raised:
        if operation == "read_range":
            b"".join(artifact_store.read_range("models/v9/items.hnsw"))
        else:
            getattr(artifact_store, operation)("models/v9/items.hnsw")

    # THEN the error is a domain error (not boto's or the OS's) that names the key
    assert isinstance(raised.value, ArtifactNotFoundError)
    assert raised.value.details == {"key": "models/v9/items.hnsw"}
    assert not artifact_store.exists("models/v9/items.hnsw")


def test_read_range_streams_the_object_or_a_part_of_it(artifact_store: ArtifactStore) -> None:
    # GIVEN a stored object larger than one chunk
    payload = bytes(range(256)) * 8_000
    artifact_store.put_bytes("models/v1/items.hnsw", payload)

    # WHEN it is read whole, in a middle part, from an offset to its end, and past its end
    whole = list(artifact_store.read_range("models/v1/items.hnsw"))
    middle = b"".join(artifact_store.read_range("models/v1/items.hnsw", 1000, 600_000))
    tail = b"".join(artifact_store.read_range("models/v1/items.hnsw", 2_000_000))
    beyond = b"".join(artifact_store.read_range("models/v1/items.hnsw", 2_040_000, 100_000))

    # THEN each holds exactly those bytes, in chunks of at most CHUNK_BYTES (a short object gives fewer)
    assert b"".join(whole) == payload and max(len(c) for c in whole) <= CHUNK_BYTES and len(whole) > 1
    assert middle == payload[1000:601_000]
    assert tail == payload[2_000_000:]
    assert beyond == payload[2_040_000:]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/.."])
def test_unsafe_keys_are_refused(artifact_store: ArtifactStore, key: str) -> None:
    # GIVEN a key that could escape the store root
    # WHEN it is used
    # THEN it is refused before reaching the backend
    with pytest.raises(ArtifactError):
        artifact_store.put_bytes(key, b"x")


def test_open_store_parses_uris(tmp_path: Path) -> None:
    # GIVEN store URIs of both kinds
    # WHEN they are opened
    local = open_store(tmp_path.as_uri())
    remote = open_store("s3://bucket/some/prefix/")

    # THEN each gets its implementation, configured from the URI
    assert isinstance(local, LocalStore) and local.root == tmp_path
    assert isinstance(local, ArtifactStore) and isinstance(remote, ArtifactStore)
    assert isinstance(remote, S3Store) and (remote.bucket, remote.prefix) == ("bucket", "some/prefix")


@pytest.mark.parametrize("uri", ["file://relative/dir", "s3:///prefix", "gs://bucket/x", "/plain/path"])
def test_open_store_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(uri)


def test_s3_client_follows_the_standard_endpoint_and_region_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a service-specific endpoint beside a general one, and a region in AWS_REGION only
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general.invalid:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.invalid:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)

    # WHEN the store's client is created (no request is sent)
    client = S3Store("bucket").client

    # THEN botocore picked the S3 endpoint itself, in the region given
    assert client.meta.endpoint_url == "http://minio.invalid:9000"
    assert client.meta.region_name == "eu-west-3"

    # AND WHEN only the general endpoint remains, a new client follows it
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert s3_client().meta.endpoint_url == "http://general.invalid:1"


@pytest.mark.integration
def test_reading_a_model_from_s3_never_imports_boto3(s3_store: str, tmp_path: Path) -> None:
    # GIVEN a published version on the S3 endpoint, and credentials in the environment (as in Lambda)
    store = open_store(s3_store)
    (tmp_path / "items.hnsw").write_bytes(bytes(range(256)) * 5000)
    publish_version(store, "v1", {"items.hnsw": tmp_path / "items.hnsw"}, {})
    promote(store, "v1")
    script = (
        "import sys; from pathlib import Path; from towerlight.store import open_store, versions; "
        f"store = open_store({s3_store!r}); "
        "version = versions.current_version(store); "
        f"model_dir, _ = versions.download_version(store, version, Path({str(tmp_path)!r}) / 'c', part_bytes=300_000); "
        "print((model_dir / 'items.hnsw').stat().st_size, 'boto3' in sys.modules)"
    )

    # WHEN a fresh process reads CURRENT and downloads the version, in ranged parts
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    # THEN the files arrive verified, and boto3 was never imported
    assert done.stdout.split() == ["1280000", "False"]
