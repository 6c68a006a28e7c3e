"""The VW exploration model in the artifact store, versioned, and recommend's short cache of it.

Layout in any ``ArtifactStore`` (beside ``models/``)::

    bandit/vw/<version>/model.vw   a saved VW model, immutable (If-None-Match)
    bandit/vw/CURRENT              {"version", "previous", "sha256", "bytes", "examples",
                                    "learned_through": {"received_at", "recommendation_id"}, "updated_at"}

``CURRENT`` is written by compare-and-swap: a learner that loses the swap discards its version, so the
decisions it learned are learned again, once, on top of the winner's model. ``learned_through`` is the
learner's watermark: the last decision (in the order it walks them) already in the model.

Example::

    >>> pointer, etag = read_vw_pointer(store)
    >>> pointer.version, pointer.examples
    ('20261130T150102Z-9a0b1c', 1200)
    >>> VWModelCache(lambda: store, epsilon=0.1).current().pmf(vw_example(shared, actions))
    [0.91, 0.01, ...]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from towerlight.errors import ArtifactError, TowerlightError
from towerlight.exploration.features import VW_ARGS
from towerlight.store import ArtifactNotFoundError, ArtifactStore
from towerlight.store.versions import new_version_id

logger = logging.getLogger(__name__)

VW_PREFIX = "bandit/vw"
VW_CURRENT = f"{VW_PREFIX}/CURRENT"
MODEL_FILE = "model.vw"


def model_key(version: str) -> str:
    """The store key of a VW model version: ``bandit/vw/<version>/model.vw``."""
    return f"{VW_PREFIX}/{version}/{MODEL_FILE}"


@dataclass(frozen=True)
class VWPointer:
    """What ``bandit/vw/CURRENT`` says: the version to serve, its checksum, and what it has learned."""

    version: str
    sha256: str
    bytes: int
    examples: int  # decisions learned since the first version
    learned_through: tuple[datetime, str] | None  # (received_at, recommendation_id) of the last one
    previous: str | None = None
    updated_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        through = self.learned_through
        return {
            "version": self.version,
            "previous": self.previous,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "examples": self.examples,
            "learned_through": None
            if through is None
            else {"received_at": through[0].isoformat(), "recommendation_id": through[1]},
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, raw: bytes) -> VWPointer:
        try:
            document = json.loads(raw)
            through = document.get("learned_through")
            return cls(
                version=str(document["version"]),
                sha256=str(document["sha256"]),
                bytes=int(document["bytes"]),
                examples=int(document["examples"]),
                learned_through=None
                if through is None
                else (datetime.fromisoformat(through["received_at"]), str(through["recommendation_id"])),
                previous=document.get("previous"),
                updated_at=document.get("updated_at"),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ArtifactError(f"{VW_CURRENT} is malformed: {exc}", {"key": VW_CURRENT}) from exc


def read_vw_pointer(store: ArtifactStore) -> tuple[VWPointer | None, str | None]:
    """``bandit/vw/CURRENT`` and its etag, or ``(None, None)`` before the first model is learned."""
    try:
        raw, etag = store.get_with_etag(VW_CURRENT)
    except ArtifactNotFoundError:
        return None, None
    return VWPointer.from_json(raw), etag


def read_vw_model(store: ArtifactStore, pointer: VWPointer) -> bytes:
    """The model bytes ``pointer`` names, checked against its size and sha256 (``ArtifactError`` otherwise)."""
    data = store.get_bytes(model_key(pointer.version))
    if len(data) != pointer.bytes or hashlib.sha256(data).hexdigest() != pointer.sha256:
        raise ArtifactError(f"VW model {pointer.version} fails its checksum", {"version": pointer.version})
    return data


def publish_vw_model(
    store: ArtifactStore,
    data: bytes,
    *,
    learned: int,
    learned_through: tuple[datetime, str],
    current: VWPointer | None,
    etag: str | None,
) -> VWPointer:
    """Upload ``data`` as a new version that learned ``learned`` more decisions, then swap ``CURRENT`` to it.

    ``current``/``etag`` are what the caller read before learning: ``PointerConflictError`` when ``CURRENT``
    moved since (the new version is deleted again). The version two back is deleted after a swap: nothing
    names it any more (``previous`` stays, for a reader that read the pointer just before).
    """
    version = new_version_id()
    store.put_bytes(model_key(version), data, if_none_match=True)
    pointer = VWPointer(
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        examples=(current.examples if current else 0) + learned,
        learned_through=learned_through,
        previous=current.version if current else None,
        updated_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    try:
        store.put_if_match(VW_CURRENT, json.dumps(pointer.to_json(), sort_keys=True).encode(), etag)
    except TowerlightError:
        store.delete(model_key(version))
        raise
    if current is not None and current.previous is not None:
        try:
            store.delete(model_key(current.previous))
        except ArtifactError as exc:  # a leftover file costs storage only
            logger.warning("could not delete VW model %s: %s", current.previous, exc)
    return pointer


def open_workspace(data: bytes | None = None, *, epsilon: float | None = None) -> Any:
    """A VW ``Workspace``: the saved model ``data``, or a new one (``VW_ARGS``); ``epsilon`` overrides its rate."""
    from vowpalwabbit import Workspace  # imported on first use: only functions that explore need it

    args = ["--quiet", *(["--epsilon", repr(epsilon)] if epsilon is not None else [])]
    if data is None:
        return Workspace(arg_list=[*VW_ARGS, *args])
    fd, path = tempfile.mkstemp(suffix=".vw")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return Workspace(arg_list=[*args, "--initial_regressor", path])
    finally:
        os.unlink(path)


def save_workspace(workspace: Any) -> bytes:
    """The bytes of ``workspace`` saved as a VW model file."""
    fd, path = tempfile.mkstemp(suffix=".vw")
    os.close(fd)
    try:
        workspace.save(path)
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(path)


class VWModel:
    """A loaded VW model: ``pmf`` of an example, serialised (a workspace is not safe to share between threads)."""

    def __init__(self, workspace: Any, version: str) -> None:
        self.version = version
        self._workspace = workspace
        self._lock = threading.Lock()

    def pmf(self, example: Sequence[str]) -> list[float]:
        """The probability of each action of a multi-line ADF example (``features.vw_example``)."""
        with self._lock:
            return list(self._workspace.predict(list(example)))


class VWModelCache:
    """The current VW model for recommend: ``CURRENT`` re-read at most every ``ttl`` seconds.

    A new version is loaded when ``CURRENT`` names one; on any failure the last good model stays (None
    before the first), and the next attempt waits ``retry_after`` seconds. ``store`` is None when no store
    is configured: there is never a model then.
    """

    def __init__(
        self,
        store: Callable[[], ArtifactStore] | None,
        *,
        epsilon: float,
        ttl: float = 60.0,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.epsilon = epsilon
        self.ttl = ttl
        self.retry_after = retry_after
        self._clock = clock
        self._model: VWModel | None = None
        self._next_read = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> VWModel | None:
        """The model to decide with (None: nothing learned yet, or never loadable)."""
        with self._lock:
            now = self._clock()
            if self._store is not None and now >= self._next_read:
                self._refresh(self._store, now)
            return self._model

    def _refresh(self, store: Callable[[], ArtifactStore], now: float) -> None:
        try:
            pointer, _ = read_vw_pointer(store())
            if pointer is not None and (self._model is None or self._model.version != pointer.version):
                data = read_vw_model(store(), pointer)
                self._model = VWModel(open_workspace(data, epsilon=self.epsilon), pointer.version)
                logger.info("VW exploration model %s loaded (%d examples)", pointer.version, pointer.examples)
        except (TowerlightError, RuntimeError, OSError) as exc:  # VW reports a bad model as RuntimeError
            logger.warning("VW model unavailable, keeping %s for %.0f s: %s", self._version, self.retry_after, exc)
            self._next_read = now + self.retry_after
            return
        self._next_read = now + self.ttl

    @property
    def _version(self) -> str | None:
        return self._model.version if self._model else None
