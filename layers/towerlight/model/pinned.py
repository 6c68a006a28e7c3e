"""Model versions an experiment pins, served beside ``CURRENT``: loaded lazily, verified, kept in memory.

A variant of ``TOWERLIGHT_EXPERIMENT`` may pin a ``model_version``; the registry serves ``CURRENT``, this
holder the pinned versions. The first request of such a variant downloads its version into
``<cache_dir>/<version>/`` (every sha256 verified, as for ``CURRENT``) and loads it; the bundle then stays
in memory (versions are immutable: never re-read). Memory is bounded by the experiment: only the versions
it names are ever loaded, and a pinned version that becomes ``CURRENT`` is served by the registry and
dropped here. A version that fails to load raises ``ModelUnavailableError`` and is retried only after a
back-off, so a broken pin costs one download per back-off, not one per request.

Example::

    >>> pinned = PinnedModels.for_registry(get_registry(), ["20261201T020000Z-ab12cd"])
    >>> pinned.get("20261201T020000Z-ab12cd", current=get_registry().get()).version
    '20261201T020000Z-ab12cd'
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from towerlight.errors import ConfigurationError, ModelUnavailableError, TowerlightError
from towerlight.model.registry import FAILED_RETRY_SECONDS, ModelRegistry, load_version
from towerlight.store import ArtifactStore, open_store

if TYPE_CHECKING:
    from towerlight.model.bundle import ModelBundle

logger = logging.getLogger(__name__)


class PinnedModels:
    """The bundles of ``versions``, each loaded by ``load(version)`` on first use (thread-safe).

    ``clock`` and ``retry_seconds`` (the back-off after a failed load) are injectable for tests.
    """

    def __init__(
        self,
        versions: Collection[str],
        load: Callable[[str], ModelBundle],
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = FAILED_RETRY_SECONDS,
    ) -> None:
        self.versions = frozenset(versions)
        self._load = load
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._bundles: dict[str, ModelBundle] = {}
        self._failed: dict[str, tuple[float, str]] = {}

    @classmethod
    def for_registry(cls, registry: ModelRegistry, versions: Collection[str]) -> PinnedModels:
        """Versions from the registry's store, downloaded into its cache directory."""
        store: ArtifactStore | None = None  # opened on the first load: no client at import time

        def load(version: str) -> ModelBundle:
            nonlocal store
            store = store or open_store(registry.store_uri)
            return load_version(store, version, registry.cache_dir)

        return cls(versions, load)

    @property
    def loaded(self) -> tuple[str, ...]:
        """The pinned versions in memory now."""
        return tuple(sorted(self._bundles))

    def get(self, version: str, current: ModelBundle) -> ModelBundle:
        """The bundle of ``version``: ``current`` when it is that version, else the pinned one.

        Raises ``ConfigurationError`` for a version the experiment does not pin and
        ``ModelUnavailableError`` when it cannot be loaded (again only after the back-off).
        """
        if version == current.version:
            if version in self._bundles:  # promoted meanwhile: the registry holds it now
                with self._lock:
                    self._bundles.pop(version, None)
            return current
        bundle = self._bundles.get(version)
        if bundle is not None:
            return bundle
        if version not in self.versions:
            raise ConfigurationError(f"model version {version!r} is not pinned by the experiment")
        with self._lock:  # one load of a version at a time; the others wait for it
            bundle = self._bundles.get(version)
            if bundle is None:
                bundle = self._load_once(version)
                self._bundles[version] = bundle
        return bundle

    def _load_once(self, version: str) -> ModelBundle:
        failed = self._failed.get(version)
        if failed is not None and self._clock() < failed[0] + self._retry_seconds:
            raise ModelUnavailableError(failed[1], {"model_version": version})
        try:
            bundle = self._load(version)
        except Exception as exc:  # whatever breaks, CURRENT keeps serving the other variants
            reason = exc.message if isinstance(exc, TowerlightError) else f"{type(exc).__name__}: {exc}"
            message = f"model version {version} pinned by the experiment could not be loaded: {reason}"
            self._failed[version] = (self._clock(), message)
            logger.warning("%s", message)
            raise ModelUnavailableError(message, {"model_version": version}) from exc
        self._failed.pop(version, None)
        logger.info("serving pinned model %s (%s) beside CURRENT", version, bundle.strategy)
        return bundle
