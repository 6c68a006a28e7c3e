"""Published model versions: immutable file sets, a manifest written last, and the ``CURRENT`` pointer.

Layout in any ``ArtifactStore``::

    models/<version>/<file>            uploaded with If-None-Match (versions are immutable)
    models/<version>/manifest.json     written after every file: a version without it is incomplete
    models/CURRENT                     {"version", "previous", "updated_at"}, compare-and-swap

>>> version = new_version_id()
>>> publish_version(store, version, {"items.hnsw": Path("out/items.hnsw")}, {"metrics": {"ndcg@10": 0.31}})
>>> promote(store, version)
>>> model_dir, manifest = download_version(store, version, Path("/tmp/towerlight/models"))
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

from towerlight.errors import ArtifactError, PointerConflictError, ValidationError, VersionExistsError
from towerlight.store.base import ArtifactNotFoundError, ArtifactStore, sha256_file
from towerlight.store.transfer import Expected, fetch_files

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODELS = "models"
CURRENT_KEY = f"{MODELS}/CURRENT"
MANIFEST = "manifest.json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_version_id(now: datetime | None = None) -> str:
    """A unique version id that sorts by creation time.

    >>> new_version_id(datetime(2026, 11, 22, 1, 15, tzinfo=UTC))
    '20261122T011500Z-3fa2c1'
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def version_key(version: str, name: str = MANIFEST) -> str:
    """The store key of one file of a version: ``models/<version>/<name>``."""
    return f"{MODELS}/{_check_name(version, 'version')}/{_check_name(name, 'file name')}"


def publish_version(
    store: ArtifactStore, version: str, files: dict[str, Path], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Upload ``files`` as an immutable version, then its manifest; returns the manifest written.

    The caller's ``manifest`` (params, metrics, data window...) is completed with ``version``,
    ``created_at``, ``schema_version`` and ``files`` = ``{name: {"sha256", "bytes"}}``. A failed publish
    leaves an incomplete version (no manifest) that is never listed or promoted; retry with a new id.

    >>> publish_version(store, "20261122T011500Z-3fa2c1", {"ranker.json": Path("ranker.json")}, {})
    {'files': {'ranker.json': {'sha256': '…', 'bytes': 812}}, 'version': '20261122T011500Z-3fa2c1', ...}
    """
    manifest_key = version_key(version)
    if not files:
        raise ValidationError(f"version {version!r} has no files to publish")
    for name in files:
        if name == MANIFEST:
            raise ValidationError(f"{MANIFEST!r} is reserved for the manifest itself")
        version_key(version, name)
    _dump(manifest)  # fail before uploading anything if the manifest cannot be written
    if store.exists(manifest_key):
        raise VersionExistsError(f"version {version!r} is already published", {"version": version})

    table: dict[str, dict[str, Any]] = {}
    for name, path in sorted(files.items()):
        try:
            sha256, size = sha256_file(path)
        except OSError as exc:
            raise ArtifactError(f"cannot read {name} at {path}: {exc}", {"file": name}) from exc
        store.put_file(version_key(version, name), path, if_none_match=True)
        table[name] = {"sha256": sha256, "bytes": size}
        logger.info("uploaded %s (%d bytes) to version %s", name, size, version)

    final = {
        **manifest,
        "version": version,
        "created_at": _now(),
        "schema_version": SCHEMA_VERSION,
        "files": table,
    }
    store.put_bytes(manifest_key, _dump(final), if_none_match=True)
    logger.info("published version %s (%d files) to %s", version, len(table), store.uri)
    return final


def read_manifest(store: ArtifactStore, version: str) -> dict[str, Any]:
    """The manifest of a complete version; ``ArtifactNotFoundError`` if the version is absent or incomplete.

    >>> read_manifest(store, "20261122T011500Z-3fa2c1")["files"]["items.hnsw"]["sha256"]
    """
    return _parse_manifest(_manifest_bytes(store, version), version)


def read_pointer(store: ArtifactStore) -> tuple[dict[str, Any] | None, str | None]:
    """``CURRENT`` and its etag (for compare-and-swap), or ``(None, None)`` before the first promote.

    >>> pointer, etag = read_pointer(store)
    >>> pointer
    {'version': '20261122T011500Z-3fa2c1', 'previous': None, 'updated_at': '2026-11-22T01:16:02.331Z'}
    """
    try:
        raw, etag = store.get_with_etag(CURRENT_KEY)
    except ArtifactNotFoundError:
        return None, None
    try:
        pointer = json.loads(raw)
    except ValueError as exc:
        raise ArtifactError(f"{CURRENT_KEY} is not JSON", {"key": CURRENT_KEY}) from exc
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise ArtifactError(f"{CURRENT_KEY} names no version", {"key": CURRENT_KEY})
    return pointer, etag


def current_version(store: ArtifactStore) -> str | None:
    """The version ``CURRENT`` names, or None before the first promote."""
    pointer, _ = read_pointer(store)
    return pointer["version"] if pointer else None


def promote(store: ArtifactStore, version: str, *, expected_current: str | EllipsisType | None = ...) -> dict[str, Any]:
    """Point ``CURRENT`` at a complete version (compare-and-swap); the old one becomes ``previous``.

    ``expected_current`` (a version, or None for "nothing promoted yet") makes the flip conditional on
    what the caller last saw: ``PointerConflictError`` if ``CURRENT`` names something else. Promoting
    the current version is a no-op. Returns the pointer now in the store.

    >>> promote(store, "20261122T011500Z-3fa2c1", expected_current="20261121T011500Z-99aa01")
    """
    read_manifest(store, version)
    pointer, etag = read_pointer(store)
    current = pointer["version"] if pointer else None
    if expected_current is not ... and current != expected_current:
        raise PointerConflictError(
            f"CURRENT is {current!r}, not the expected {expected_current!r}",
            {"current": current, "expected": expected_current},
        )
    if pointer and current == version:
        return pointer
    return _write_pointer(store, {"version": version, "previous": current}, etag)


def rollback(store: ArtifactStore) -> dict[str, Any]:
    """Point ``CURRENT`` back at ``previous`` (or, if that is gone, the newest older version).

    Rolling back walks back in history: the new ``previous`` is the newest version older than the
    target, so a second rollback goes further back instead of returning to the version abandoned.

    >>> rollback(store)["version"]
    """
    pointer, etag = read_pointer(store)
    if pointer is None:
        raise ArtifactError("nothing is promoted yet, so there is nothing to roll back")
    current = pointer["version"]
    versions = [entry["version"] for entry in list_versions(store)]
    target = pointer.get("previous")
    if target not in versions or target == current:
        older = versions[versions.index(current) + 1 :] if current in versions else []
        target = older[0] if older else None
    if target is None:
        raise ArtifactError(f"no version older than {current!r} to roll back to", {"current": current})
    before_target = versions[versions.index(target) + 1 :]
    new = {"version": target, "previous": before_target[0] if before_target else None}
    logger.warning("rolling back from %s to %s", current, target)
    return _write_pointer(store, new, etag)


def list_versions(store: ArtifactStore) -> list[dict[str, Any]]:
    """Complete versions, newest first: ``version``, ``created_at``, ``metrics`` (top-level numbers),
    ``files``, ``bytes``, ``is_current``, ``is_previous``. Incomplete or unreadable versions are skipped.

    >>> [v["version"] for v in list_versions(store) if v["is_current"]]
    ['20261122T011500Z-3fa2c1']
    """
    pointer, _ = read_pointer(store)
    current = pointer["version"] if pointer else None
    previous = pointer.get("previous") if pointer else None
    entries = []
    for version in store.list_prefixes(MODELS):
        try:
            manifest = read_manifest(store, version)
        except (ArtifactError, ValidationError) as exc:
            logger.info("skipping version %s: %s", version, exc)
            continue
        metrics = manifest.get("metrics")
        entries.append(
            {
                "version": version,
                "created_at": manifest["created_at"],
                "metrics": _numbers(metrics) if isinstance(metrics, dict) else {},
                "files": len(manifest["files"]),
                "bytes": sum(entry["bytes"] for entry in manifest["files"].values()),
                "is_current": version == current,
                "is_previous": version == previous,
            }
        )
    entries.sort(key=lambda e: (str(e["created_at"]), e["version"]), reverse=True)
    return entries


def prune(store: ArtifactStore, keep: int) -> list[str]:
    """Delete complete versions beyond the newest ``keep``, never ``CURRENT`` or its ``previous``.

    Returns the versions deleted. Not meant to race a promote of the very versions being pruned.

    >>> prune(store, keep=5)
    ['20261101T011500Z-0a1b2c']
    """
    if keep < 1:
        raise ValidationError(f"keep must be at least 1, got {keep}")
    pointer, _ = read_pointer(store)
    protected = {pointer["version"], pointer.get("previous")} if pointer else set()
    doomed = [e["version"] for e in list_versions(store)[keep:] if e["version"] not in protected]
    for version in doomed:
        store.delete(version_key(version))  # manifest first: a half-deleted version reads as incomplete
        store.delete_prefix(f"{MODELS}/{version}")
        logger.info("pruned version %s", version)
    return doomed


def download_version(
    store: ArtifactStore,
    version: str,
    dest_dir: Path,
    *,
    only: Collection[str] | None = None,
    optional: Collection[str] = (),
    part_bytes: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Download and verify the files of a version into ``dest_dir/<version>/``; returns it and the manifest.

    ``only`` limits the download to those manifest entries (serving never loads the item tower, a
    fifth of the bytes); each must be listed in the manifest, except the ``optional`` ones (files
    added to later versions, such as ``content.npz``), which are skipped when absent.

    Files are fetched concurrently (those above ``part_bytes`` in ranged parts) and hashed as they
    stream in (``towerlight.store.transfer``). They land in a temporary directory renamed into place only once
    all checksums match, so a partial download is never seen; an existing verified copy is reused.
    ``ArtifactError`` names the file on any size or sha256 mismatch.

    >>> model_dir, manifest = download_version(store, "20261122T011500Z-3fa2c1", Path("/tmp/towerlight"))
    >>> model_dir / "items.hnsw"
    """
    raw = _manifest_bytes(store, version)
    manifest = _parse_manifest(raw, version)
    names = (
        list(manifest["files"]) if only is None else [n for n in only if n in manifest["files"] or n not in optional]
    )
    unknown = sorted(set(names) - set(manifest["files"]))
    if unknown:
        raise ArtifactError(f"version {version!r} has no file(s) {unknown}", {"version": version, "files": unknown})
    final = dest_dir / version
    if final.is_dir():
        try:
            _verify_local(final, manifest, raw, names)
            return final, manifest
        except ArtifactError as exc:
            logger.warning("discarding local copy of %s: %s", version, exc)
            _remove_dir(final)

    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=dest_dir))
    try:
        fetch_files(store, [_expected(manifest, name, staging) for name in names], part_bytes=part_bytes)
        (staging / MANIFEST).write_bytes(raw)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process finished the same download first: use its copy if it verifies.
            _verify_local(final, manifest, raw, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded version %s to %s", version, final)
    return final, manifest


def _expected(manifest: dict[str, Any], name: str, directory: Path) -> Expected:
    entry = manifest["files"][name]
    return Expected(version_key(manifest["version"], name), directory / name, entry["bytes"], entry["sha256"])


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValidationError(f"invalid {what} {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump(document: dict[str, Any]) -> bytes:
    try:
        return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"manifest is not plain JSON: {exc}") from exc


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _write_pointer(store: ArtifactStore, pointer: dict[str, Any], etag: str | None) -> dict[str, Any]:
    pointer = {**pointer, "updated_at": _now()}
    store.put_if_match(CURRENT_KEY, _dump(pointer), etag)
    logger.info("CURRENT -> %s (previous %s)", pointer["version"], pointer["previous"])
    return pointer


def _manifest_bytes(store: ArtifactStore, version: str) -> bytes:
    try:
        return store.get_bytes(version_key(version))
    except ArtifactNotFoundError as exc:
        raise ArtifactNotFoundError(
            f"version {version!r} is not published (absent or incomplete: no manifest)",
            {"version": version},
        ) from exc


def _parse_manifest(raw: bytes, version: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ArtifactError(f"manifest of {version!r} is not JSON", {"version": version}) from exc
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ArtifactError(
            f"manifest of {version!r} has schema_version {found!r}, expected {SCHEMA_VERSION}",
            {"version": version},
        )
    files = manifest.get("files")
    if manifest.get("version") != version or not isinstance(files, dict) or not files:
        raise ArtifactError(f"manifest of {version!r} is malformed", {"version": version})
    for name, entry in files.items():
        _check_name(name, "file name")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
            raise ArtifactError(f"manifest of {version!r}: no sha256 for {name}", {"file": name})
        if not isinstance(entry.get("bytes"), int):
            raise ArtifactError(f"manifest of {version!r}: no size for {name}", {"file": name})
    return manifest


def _verify_local(directory: Path, manifest: dict[str, Any], raw_manifest: bytes, names: Collection[str]) -> None:
    version = manifest["version"]
    local_manifest = directory / MANIFEST
    if not local_manifest.is_file() or local_manifest.read_bytes() != raw_manifest:
        raise ArtifactError(f"local copy of {version!r} has a different manifest", {"version": version})
    for name in names:
        expected = manifest["files"][name]
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{name} of version {version!r} is missing", {"file": name})
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise ArtifactError(
                f"{name} of version {version!r} has {size} bytes, expected {expected['bytes']}",
                {"version": version, "file": name},
            )
        sha256, _ = sha256_file(path)
        if sha256 != expected["sha256"]:
            raise ArtifactError(
                f"{name} of version {version!r} fails its checksum (sha256 {sha256}, expected {expected['sha256']})",
                {"version": version, "file": name},
            )


def _remove_dir(directory: Path) -> None:
    doomed = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}.stale")
    try:
        os.rename(directory, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)
