"""The model a warm process serves: loaded lazily, refreshed from ``CURRENT``, swapped atomically.

On first use the registry reads ``models/CURRENT``, downloads that version into
``<cache_dir>/<version>/`` (every sha256 verified) and loads it. Then, at most every
``MODEL_REFRESH_SECONDS``, one request re-reads ``CURRENT``; a new version is loaded beside the old one
and swapped in with a single reference assignment, so a request in flight keeps the bundle it started
with. Any failure keeps the last good model (the failed version is retried after a back-off). With no
model in memory, a version whose two-tower files fail still serves its popularity table if that
verifies; with nothing at all, ``get`` raises ``ModelUnavailableError`` (HTTP 503) and CURRENT is
re-read every few seconds, so a fix is picked up quickly.

In Lambda the handler module calls ``prefetch()`` at import: the first load then runs in a background
thread during the init phase (which has a full CPU burst), overlapping the download with the handler's
own imports; the end of the module waits for it (within the init's time limit), and a request that
comes earlier or finds it still loading waits under the registry's lock. This module imports neither
numpy nor onnxruntime itself, so that thread starts before they are imported.

Example::

    >>> registry = get_registry()          # configured from the environment (Settings)
    >>> bundle = registry.get()            # loads on first use, re-checks CURRENT when due
    >>> bundle.version
    '20261122T011500Z-3fa2c1'
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from towerlight import artifacts
from towerlight.config import get_settings
from towerlight.errors import ConfigurationError, ModelUnavailableError, TowerlightError
from towerlight.store import ArtifactStore, open_store, versions

if TYPE_CHECKING:
    from towerlight.model.bundle import ModelBundle

logger = logging.getLogger(__name__)

# A version that failed to load is retried only this long after (versions are immutable, so a bad
# checksum stays bad; the retry is for transient download errors) ...
FAILED_RETRY_SECONDS = 300.0
# ... unless nothing at all is served: then a retry costs nothing but a download, and CURRENT is
# re-read at least this often so that a fix is picked up quickly.
NO_MODEL_RETRY_SECONDS = 30.0
NO_MODEL_RECHECK_SECONDS = 5.0
# How long a handler module waits for the model it prefetched, by Lambda initialization type: an
# on-demand init may last 10 s, a provisioned-concurrency one 130 s (requests only come after it). Not
# under SnapStart, whose snapshot would freeze the thread mid-download.
INIT_WAIT_SECONDS = {"on-demand": 8.0, "provisioned-concurrency": 120.0}
# The GIL switch interval while the handler module imports beside the download (Python's default: 5 ms).
# Every socket read, write and hash of a download thread gives up the GIL and waits to take it back
# from the importing thread: at 5 ms a wait, the imports held the download to a crawl.
INIT_SWITCH_INTERVAL = 0.0005


def load_version(store: ArtifactStore, version: str, cache_dir: Path) -> ModelBundle:
    """Download ``version`` into ``cache_dir/<version>/`` (every sha256 verified) and load it.

    >>> load_version(open_store("file:///tmp/store"), "20261122T011500Z-3fa2c1", Path("/tmp/towerlight"))
    """
    model_dir, manifest = versions.download_version(
        store,
        version,
        cache_dir,
        only=artifacts.SERVING_FILES,
        optional=artifacts.OPTIONAL_SERVING_FILES,
        part_bytes=get_settings().download_part_bytes,
    )
    # numpy, onnxruntime and hnswlib: imported once the download is under way, not before it starts
    from towerlight.model.bundle import load_bundle

    return load_bundle(model_dir, manifest)


def load_version_popularity(store: ArtifactStore, version: str) -> ModelBundle:
    """The popularity-only bundle of ``version``: its popularity (and items) files alone, verified.

    >>> load_version_popularity(open_store("file:///tmp/store"), "20261122T011500Z-3fa2c1").strategy
    'popularity'
    """
    from towerlight.model.bundle import load_popularity_bundle

    manifest = versions.read_manifest(store, version)
    return load_popularity_bundle(manifest, lambda name: store.get_bytes(versions.version_key(version, name)))


@dataclass(frozen=True)
class RegistryStatus:
    """What the registry serves and what last went wrong (for /health and the admin function)."""

    version: str | None
    strategy: str | None
    loaded_at: float | None
    checked_at: float | None
    last_error: str | None


class ModelRegistry:
    """Thread-safe holder of the served ``ModelBundle`` with TTL refresh and last-good fallback.

    ``loader(store, version, cache_dir)`` and ``clock`` are injectable for tests.

    Example::

        >>> registry = ModelRegistry("file:///tmp/store", Path("/tmp/towerlight"), refresh_seconds=60)
        >>> registry.get().version
        '20261122T011500Z-3fa2c1'
    """

    def __init__(
        self,
        store_uri: str,
        cache_dir: Path,
        refresh_seconds: float,
        *,
        loader: Callable[[ArtifactStore, str, Path], ModelBundle] = load_version,
        fallback_loader: Callable[[ArtifactStore, str], ModelBundle] = load_version_popularity,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store_uri = store_uri
        self.cache_dir = cache_dir
        self.refresh_seconds = refresh_seconds
        self._loader = loader
        self._fallback_loader = fallback_loader
        self._clock = clock
        self._lock = threading.Lock()
        self._store: ArtifactStore | None = None
        self._bundle: ModelBundle | None = None
        self._partial = False  # serving a version's popularity only, after its full load failed
        self._next_check = float("-inf")
        self._checked_at: float | None = None
        self._failed: dict[str, float] = {}
        self._last_error: str | None = None

    def get(self) -> ModelBundle:
        """The bundle to serve now; re-reads ``CURRENT`` first when the refresh interval has passed.

        Raises ``ModelUnavailableError`` when no model could ever be loaded.
        """
        bundle = self._bundle
        if bundle is not None and self._clock() < self._next_check:
            return bundle
        # With a model in memory, a request never waits for another thread's refresh.
        if self._lock.acquire(blocking=bundle is None):
            try:
                if self._clock() >= self._next_check:
                    self._refresh()
            finally:
                self._lock.release()
        bundle = self._bundle
        if bundle is None:
            raise ModelUnavailableError(self._last_error or "no model is loaded", {"store": self.store_uri})
        return bundle

    def prefetch(self) -> threading.Thread:
        """Start the first load in a background thread; a request that arrives meanwhile waits for it.

        Errors are recorded as a request's would be (``status().last_error``, the 503 message).
        """
        thread = threading.Thread(target=self._prefetch, name="towerlight-model-prefetch", daemon=True)
        thread.start()
        return thread

    def _prefetch(self) -> None:
        with contextlib.suppress(ModelUnavailableError):  # logged and kept as last_error for the first request
            self.get()

    def status(self) -> RegistryStatus:
        bundle = self._bundle
        return RegistryStatus(
            version=bundle.version if bundle else None,
            strategy=bundle.strategy if bundle else None,
            loaded_at=bundle.loaded_at if bundle else None,
            checked_at=self._checked_at,
            last_error=self._last_error,
        )

    def _refresh(self) -> None:
        now = self._clock()
        self._checked_at = time.time()
        try:
            self._follow_pointer(now)
        finally:
            served = self._bundle is not None
            interval = self.refresh_seconds if served else min(self.refresh_seconds, NO_MODEL_RECHECK_SECONDS)
            # Counted from the end of the check: a slow download must not make the next request re-check.
            self._next_check = self._clock() + interval

    def _follow_pointer(self, now: float) -> None:
        """Read CURRENT and, when it names another version, load and swap it in (or record why not)."""
        current = self._bundle
        try:
            if self._store is None:
                self._store = open_store(self.store_uri)
            version = versions.current_version(self._store)
        except TowerlightError as exc:
            self._note_error(f"cannot read the model pointer in {self.store_uri}: {exc.message}")
            return
        if version is None:
            self._note_error(f"no model is published yet: models/CURRENT not found in {self.store_uri}")
            return
        if current is not None and current.version == version and not self._partial:
            return
        backoff = FAILED_RETRY_SECONDS if current else NO_MODEL_RETRY_SECONDS
        if now < self._failed.get(version, float("-inf")) + backoff:
            return
        self._remove_other_downloads(keep=version)  # before downloading: /tmp holds one version at a time
        try:
            bundle, partial = self._loader(self._store, version, self.cache_dir), False
        except Exception as exc:  # whatever breaks in a new version, the last good one keeps serving
            self._failed[version] = now
            self._note_error(f"model version {version} could not be loaded: {_describe(exc)}")
            logger.debug("load failure of %s", version, exc_info=True)
            if current is not None:
                return
            fallback = self._load_fallback(version)
            if fallback is None:
                return
            bundle, partial = fallback, True
        self._bundle = bundle  # the atomic swap: readers see the old bundle or the new one
        # What is alive now (the bundle, the app, the imported modules) lives as long as the process:
        # move it out of the collector's generations, so that a full collection never walks it again.
        gc.freeze()
        self._partial = partial
        if not partial:
            self._failed.pop(version, None)
            self._last_error = None
        logger.info("serving model %s (%s; was %s)", version, bundle.strategy, current.version if current else None)

    def _load_fallback(self, version: str) -> ModelBundle | None:
        assert self._store is not None
        try:
            return self._fallback_loader(self._store, version)
        except Exception as exc:  # the last resort failed too: nothing to serve
            logger.warning("no popularity fallback in version %s: %s", version, _describe(exc))
            return None

    def _note_error(self, message: str) -> None:
        self._last_error = message
        logger.warning("%s", message)

    def _remove_other_downloads(self, keep: str) -> None:
        """Free /tmp: a loaded bundle holds its data in memory, so no other version's files are needed,
        not even those of the version being served (it keeps serving if the new one fails)."""
        try:
            stale = [p for p in self.cache_dir.iterdir() if p.is_dir() and p.name != keep]
        except OSError:
            return
        for path in stale:
            # Only finished version downloads (they hold a manifest); in-flight ones start with ".".
            if not path.name.startswith(".") and (path / versions.MANIFEST).is_file():
                shutil.rmtree(path, ignore_errors=True)


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, TowerlightError) else f"{type(exc).__name__}: {exc}"


_registry: ModelRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ModelRegistry:
    """The process-wide registry, configured from ``Settings`` on first use.

    >>> get_registry().get().strategy
    'two_tower'
    """
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                settings = get_settings()
                _registry = ModelRegistry(
                    settings.require_store(), Path(settings.cache_dir), settings.model_refresh_seconds
                )
    return _registry


def init_wait_seconds() -> float:
    """How long a Lambda init may wait for what a handler module starts at import (``INIT_WAIT_SECONDS``);
    0 outside Lambda (tests, tools), under SnapStart, or when the environment cannot be read."""
    try:
        return INIT_WAIT_SECONDS.get(get_settings().lambda_initialization or "", 0.0)
    except ConfigurationError:
        return 0.0


def prefetch() -> Callable[[], None]:
    """From a Lambda handler module at import: start loading the process's model during init.

    Only in a Lambda on-demand or provisioned-concurrency init (``AWS_LAMBDA_INITIALIZATION_TYPE``),
    so tests and tools that import handlers load nothing in the background. A configuration error is
    left for the first request to report.

    Returns ``finish``, for the end of the handler module: it waits for the load, at most until
    ``INIT_WAIT_SECONDS`` after the prefetch began, so that the load ends within init (which has a
    CPU burst, and after which a provisioned-concurrency environment is frozen until its first
    request). A bigger model goes on loading and the first request waits for the rest. In between,
    the GIL changes hands every ``INIT_SWITCH_INTERVAL`` and the cyclic garbage collector is off.

    >>> finish = prefetch()  # at the top of functions/recommend/app.py, before the web framework
    >>> finish()             # at its end
    """
    thread, wait = None, init_wait_seconds()
    with contextlib.suppress(ConfigurationError):
        thread = get_registry().prefetch() if wait else None
    deadline = time.monotonic() + wait
    switch_interval, collecting = sys.getswitchinterval(), gc.isenabled()
    if thread is not None:
        sys.setswitchinterval(INIT_SWITCH_INTERVAL)
        # Collections took ~15% of the imports' CPU, walking objects that all live as long as the process.
        gc.disable()

    def finish() -> None:
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            sys.setswitchinterval(switch_interval)
            if collecting:
                gc.enable()
            gc.freeze()  # what init built (the app, the modules) is never collected: keep it out of the walks

    return finish


def reset(registry: ModelRegistry | None = None) -> None:
    """Forget the process-wide registry (tests), or install ``registry`` in its place."""
    global _registry
    with _registry_lock:
        _registry = registry
