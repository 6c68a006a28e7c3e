"""ModelRegistry: lazy load, TTL refresh of CURRENT, last-good fallback, atomic swap, thread safety.

Versions are published for real in a local directory store (``file://``); loading is replaced by a
fake loader so these tests need no ONNX model, and the clock is a settable number.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from towerlight.config import get_settings
from towerlight.errors import ArtifactError, ConfigurationError, ModelUnavailableError, http_status
from towerlight.model import registry as registry_module
from towerlight.model.registry import (
    FAILED_RETRY_SECONDS,
    NO_MODEL_RECHECK_SECONDS,
    NO_MODEL_RETRY_SECONDS,
    ModelRegistry,
)
from towerlight.store import ArtifactStore, open_store, transfer
from towerlight.store.local import LocalStore
from towerlight.store.versions import download_version, promote, publish_version

REFRESH = 60.0


@dataclass(frozen=True)
class FakeBundle:
    version: str
    strategy: str = "two_tower"
    loaded_at: float = 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Records the versions it is asked for; fails for the versions in ``broken``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.broken: set[str] = set()

    def __call__(self, store: object, version: str, cache_dir: Path) -> FakeBundle:
        self.calls.append(version)
        if version in self.broken:
            raise ArtifactError(f"items.hnsw of version {version!r} fails its checksum")
        return FakeBundle(version)


class GatedLoader(Loader):
    """A ``Loader`` that says when a load has ``started`` and holds it until ``release`` (at most 5 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, store: object, version: str, cache_dir: Path) -> FakeBundle:
        self.started.set()
        self.release.wait(5)
        return super().__call__(store, version, cache_dir)


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def publish(store_uri: str, tmp_path: Path, version: str, *, current: bool = True) -> None:
    source = tmp_path / f"{version}.bin"
    source.write_bytes(version.encode())
    store = open_store(store_uri)
    publish_version(store, version, {"popularity.npz": source}, {})
    if current:
        promote(store, version)


def make_registry(store_uri: str, tmp_path: Path, loader: Loader, clock: Clock, **kwargs: object) -> ModelRegistry:
    return ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=loader, clock=clock, **kwargs)


def test_the_refresh_interval_starts_when_a_slow_load_ends(store_uri: str, tmp_path: Path) -> None:
    # GIVEN v1 promoted, and a load that takes longer than the refresh interval
    publish(store_uri, tmp_path, "v1")
    clock = Clock()

    class SlowLoader(Loader):
        def __call__(self, store: object, version: str, cache_dir: Path) -> FakeBundle:
            clock.now += REFRESH + 5
            return super().__call__(store, version, cache_dir)

    loader = SlowLoader()
    registry = make_registry(store_uri, tmp_path, loader, clock)
    registry.get()
    checked = registry.status().checked_at
    # WHEN v2 is promoted and the next request comes just before a full interval after the load
    publish(store_uri, tmp_path, "v2")
    clock.now += REFRESH - 1
    served = registry.get()
    # THEN CURRENT was not re-read: v1 is still served, and the next check comes a full interval later
    assert served.version == "v1" and loader.calls == ["v1"]
    assert registry.status().checked_at == checked
    clock.now += 2
    assert registry.get().version == "v2"


def test_first_use_loads_current_and_caches_it_until_the_refresh_interval(store_uri: str, tmp_path: Path) -> None:
    # GIVEN v1 promoted, and a registry that has not loaded anything
    publish(store_uri, tmp_path, "v1")
    loader, clock = Loader(), Clock()
    registry = make_registry(store_uri, tmp_path, loader, clock)
    assert loader.calls == []
    # WHEN it is used twice, v2 is promoted, and it is used again before the interval ends
    first = registry.get()
    publish(store_uri, tmp_path, "v2")
    clock.now += REFRESH - 1
    second = registry.get()
    # THEN v1 was loaded once and is still served
    assert first.version == second.version == "v1"
    assert first is second
    assert loader.calls == ["v1"]


def test_a_promoted_version_is_swapped_in_after_the_refresh_interval(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a registry serving v1
    publish(store_uri, tmp_path, "v1")
    loader, clock = Loader(), Clock()
    registry = make_registry(store_uri, tmp_path, loader, clock)
    registry.get()
    # WHEN v2 is promoted and the interval passes
    publish(store_uri, tmp_path, "v2")
    clock.now += REFRESH
    # THEN the next request gets v2, and an unchanged CURRENT later loads nothing more
    assert registry.get().version == "v2"
    clock.now += REFRESH
    assert registry.get().version == "v2"
    assert loader.calls == ["v1", "v2"]
    assert registry.status().version == "v2" and registry.status().last_error is None


def test_a_version_that_fails_to_load_keeps_the_last_good_one(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a registry serving v1, then a promoted v2 that cannot be loaded
    publish(store_uri, tmp_path, "v1")
    loader, clock = Loader(), Clock()
    registry = make_registry(store_uri, tmp_path, loader, clock)
    registry.get()
    publish(store_uri, tmp_path, "v2")
    loader.broken.add("v2")
    # WHEN the interval passes, twice
    clock.now += REFRESH
    after_failure = registry.get()
    clock.now += REFRESH
    registry.get()
    # THEN v1 keeps serving, the error is reported, and v2 is not retried before its back-off
    assert after_failure.version == "v1"
    assert "v2" in (registry.status().last_error or "") and "checksum" in (registry.status().last_error or "")
    assert loader.calls == ["v1", "v2"]
    # AND once the back-off is over and v2 loads, it is served
    loader.broken.clear()
    clock.now += FAILED_RETRY_SECONDS
    assert registry.get().version == "v2"


def test_no_current_pointer_is_a_503_that_says_why(store_uri: str, tmp_path: Path) -> None:
    # GIVEN an empty store
    registry = make_registry(store_uri, tmp_path, Loader(), Clock())
    # WHEN a model is asked for
    with pytest.raises(ModelUnavailableError) as caught:
        registry.get()
    # THEN the error maps to 503 and names the missing pointer
    assert http_status(caught.value) == 503
    assert "no model is published yet" in caught.value.message
    assert "CURRENT" in caught.value.message


def test_without_a_model_a_broken_version_serves_its_popularity(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a promoted v1 whose full load fails, with a popularity fallback available
    publish(store_uri, tmp_path, "v1")
    loader, clock = Loader(), Clock()
    loader.broken.add("v1")
    fallbacks: list[str] = []

    def fallback(store: object, version: str) -> FakeBundle:
        fallbacks.append(version)
        return FakeBundle(version, strategy="popularity")

    registry = make_registry(store_uri, tmp_path, loader, clock, fallback_loader=fallback)
    # WHEN a model is asked for
    bundle = registry.get()
    # THEN the popularity fallback of v1 is served
    assert (bundle.version, bundle.strategy) == ("v1", "popularity")
    assert fallbacks == ["v1"]
    # AND after the back-off the full v1 is tried again and replaces the fallback
    loader.broken.clear()
    clock.now += FAILED_RETRY_SECONDS
    assert registry.get().strategy == "two_tower"


def test_without_any_model_or_fallback_the_load_error_is_the_503_message(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a promoted version that fails, and no popularity fallback either
    publish(store_uri, tmp_path, "v1")
    loader = Loader()
    loader.broken.add("v1")

    def no_fallback(store: object, version: str) -> FakeBundle:
        raise ArtifactError("popularity.npz is missing")

    registry = make_registry(store_uri, tmp_path, loader, Clock(), fallback_loader=no_fallback)
    # WHEN a model is asked for  THEN the 503 explains which version failed and why
    with pytest.raises(ModelUnavailableError, match=r"version v1 could not be loaded: .*checksum"):
        registry.get()


def test_without_any_model_a_failed_load_is_retried_sooner(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a cold process whose first load fails (say, a transient download error) with no fallback
    publish(store_uri, tmp_path, "v1")
    loader, clock = Loader(), Clock()
    loader.broken.add("v1")

    def no_fallback(store: object, version: str) -> FakeBundle:
        raise ArtifactError("no popularity table")

    registry = make_registry(store_uri, tmp_path, loader, clock, fallback_loader=no_fallback)
    with pytest.raises(ModelUnavailableError):
        registry.get()
    # WHEN the store recovers, and requests keep arriving
    loader.broken.clear()
    clock.now += NO_MODEL_RECHECK_SECONDS
    with pytest.raises(ModelUnavailableError):
        registry.get()  # CURRENT re-read quickly, but the same version is not hammered
    clock.now += NO_MODEL_RETRY_SECONDS
    # THEN the version is retried well before the back-off used while a model serves
    assert registry.get().version == "v1"
    assert NO_MODEL_RETRY_SECONDS < FAILED_RETRY_SECONDS
    assert loader.calls == ["v1", "v1"]


def test_concurrent_first_requests_load_the_model_once(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a slow loader and eight threads arriving together on a cold registry
    publish(store_uri, tmp_path, "v1")
    loader = GatedLoader()
    started, release = loader.started, loader.release
    registry = ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=loader, clock=Clock())
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(registry.get().version)) for _ in range(8)]
    # WHEN they all ask for the model
    for thread in threads:
        thread.start()
    started.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    # THEN every thread got v1 from a single load
    assert results == ["v1"] * 8
    assert loader.calls == ["v1"]


def test_a_refresh_in_progress_does_not_block_other_requests(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a registry serving v1 and a slow load of v2 running in another thread
    publish(store_uri, tmp_path, "v1")
    clock = Clock()
    started, release = threading.Event(), threading.Event()

    def loader(store: object, version: str, cache_dir: Path) -> FakeBundle:
        if version == "v2":
            started.set()
            release.wait(5)
        return FakeBundle(version)

    registry = ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=loader, clock=clock)
    registry.get()
    publish(store_uri, tmp_path, "v2")
    clock.now += REFRESH
    refresher = threading.Thread(target=registry.get)
    refresher.start()
    started.wait(5)
    # WHEN another request arrives during that load
    during = registry.get()
    release.set()
    refresher.join(5)
    # THEN it is served v1 at once, and v2 afterwards
    assert during.version == "v1"
    assert registry.get().version == "v2"


def test_other_downloads_are_removed_before_a_new_version_is_fetched(store_uri: str, tmp_path: Path) -> None:
    # GIVEN downloaded copies of v1 and v2, an unrelated directory and a partial download in the cache
    cache = tmp_path / "cache"
    for name in ("v1", "v2"):
        (cache / name).mkdir(parents=True)
        (cache / name / "manifest.json").write_text("{}")
    (cache / "not-a-version").mkdir()
    (cache / ".v3.partial").mkdir()
    publish(store_uri, tmp_path, "v2")
    seen_by_loader: list[list[str]] = []

    def loader(store: object, version: str, cache_dir: Path) -> FakeBundle:
        seen_by_loader.append(sorted(p.name for p in cache_dir.iterdir()))
        return FakeBundle(version)

    registry = ModelRegistry(store_uri, cache, REFRESH, loader=loader, clock=Clock())
    # WHEN v2 is loaded
    registry.get()
    # THEN the other version's download was gone before v2 was fetched (/tmp holds one version at a
    # time), and nothing else was touched
    assert seen_by_loader == [[".v3.partial", "not-a-version", "v2"]]
    assert sorted(p.name for p in cache.iterdir()) == [".v3.partial", "not-a-version", "v2"]


def test_the_process_registry_comes_from_settings_and_reset_forgets_it(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the store, cache and refresh interval in the environment
    monkeypatch.setenv("TOWERLIGHT_STORE", store_uri)
    monkeypatch.setenv("TOWERLIGHT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "5")
    get_settings.cache_clear()
    registry_module.reset()
    try:
        # WHEN the process registry is asked for twice, then reset
        first = registry_module.get_registry()
        again = registry_module.get_registry()
        registry_module.reset()
        fresh = registry_module.get_registry()
        # THEN it is configured from the environment, shared, and replaced after reset
        assert (first.store_uri, first.cache_dir, first.refresh_seconds) == (
            store_uri,
            tmp_path / "cache",
            5.0,
        )
        assert first is again and fresh is not first
    finally:
        registry_module.reset()
        get_settings.cache_clear()


def downloading_loader(store: ArtifactStore, version: str, cache_dir: Path) -> FakeBundle:
    """The real concurrent, checksummed download (small parts, several threads), then a fake load."""
    download_version(store, version, cache_dir)
    return FakeBundle(version)


def test_a_version_whose_concurrent_download_fails_its_checksum_keeps_the_last_good_one(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN v1 served, then v2 promoted with one file corrupted in the store after publishing
    monkeypatch.setattr(transfer, "PART_BYTES", 64 * 1024)  # several ranged parts per file
    ranges: list[tuple[str, int]] = []
    read_range = LocalStore.read_range
    monkeypatch.setattr(
        LocalStore, "read_range", lambda s, k, start=0, n=None: ranges.append((k, start)) or read_range(s, k, start, n)
    )
    store = open_store(store_uri)
    for version in ("v1", "v2"):
        files = {}
        for name, size in (("items.hnsw", 300_000), ("items.npz", 150_000), ("features.json", 2_000)):
            files[name] = tmp_path / f"{version}-{name}"
            files[name].write_bytes(bytes((i + len(version)) % 251 for i in range(size)))
        publish_version(store, version, files, {})
    promote(store, "v1")
    clock = Clock()
    registry = ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=downloading_loader, clock=clock)
    assert registry.get().version == "v1"
    damaged = bytearray(store.get_bytes("models/v2/items.hnsw"))
    damaged[200_000] ^= 0xFF
    store.put_bytes("models/v2/items.hnsw", bytes(damaged))
    promote(store, "v2")

    # WHEN the refresh interval passes
    clock.now += REFRESH
    served = registry.get()

    # THEN v2 was fetched in ranged parts, v1 keeps serving, the error names the file, and no partial
    # download of v2 is left
    assert ("models/v2/items.hnsw", 4 * 64 * 1024) in ranges
    assert served.version == "v1"
    assert "items.hnsw" in (registry.status().last_error or "") and "checksum" in (registry.status().last_error or "")
    assert list((tmp_path / "cache").iterdir()) == []  # v1 serves from memory; its files went first


def test_a_prefetch_loads_in_the_background_and_the_first_request_waits_for_it(store_uri: str, tmp_path: Path) -> None:
    # GIVEN v1 promoted and a slow loader
    publish(store_uri, tmp_path, "v1")
    loader = GatedLoader()
    started, release = loader.started, loader.release
    registry = ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=loader, clock=Clock())

    # WHEN a prefetch starts and a request arrives while it loads
    thread = registry.prefetch()
    assert started.wait(5)
    results: list[str] = []
    request = threading.Thread(target=lambda: results.append(registry.get().version))
    request.start()
    request.join(0.2)
    waited = request.is_alive()
    release.set()
    request.join(5)
    thread.join(5)

    # THEN the request waited for the prefetch and got its model, loaded once
    assert waited and results == ["v1"]
    assert loader.calls == ["v1"]


def test_a_failed_prefetch_is_the_first_requests_503(store_uri: str, tmp_path: Path) -> None:
    # GIVEN a promoted version that cannot be loaded and has no popularity fallback
    publish(store_uri, tmp_path, "v1")
    loader = Loader()
    loader.broken.add("v1")
    registry = make_registry(store_uri, tmp_path, loader, Clock(), fallback_loader=lambda *_: None)

    # WHEN it is prefetched, then asked for
    registry.prefetch().join(5)

    # THEN the prefetch failed quietly, and the request gets the load error as its 503
    with pytest.raises(ModelUnavailableError, match="checksum"):
        registry.get()
    assert loader.calls == ["v1"]


@pytest.mark.parametrize(
    ("initialization", "prefetched"),
    [("on-demand", True), ("provisioned-concurrency", True), ("snap-start", False), (None, False)],
)
def test_the_process_prefetch_runs_only_in_a_lambda_init_that_keeps_threads(
    store_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    initialization: str | None,
    prefetched: bool,
) -> None:
    # GIVEN the process registry, and Lambda's initialization type (or none: a test, a tool)
    if initialization is None:
        monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", initialization)
    monkeypatch.setenv("TOWERLIGHT_STORE", store_uri)
    get_settings.cache_clear()
    calls: list[str] = []
    registry_module.reset(ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=Loader(), clock=Clock()))

    def prefetch(self: ModelRegistry) -> threading.Thread:
        calls.append("prefetch")
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread

    monkeypatch.setattr(ModelRegistry, "prefetch", prefetch)
    default = sys.getswitchinterval()
    try:
        # WHEN a handler module asks for the prefetch, imports the rest, then finishes its init
        finish = registry_module.prefetch()
        while_importing = sys.getswitchinterval(), gc.isenabled()
        finish()
        # THEN it starts only in an on-demand or provisioned-concurrency init, the one that waits for it
        assert calls == (["prefetch"] if prefetched else [])
        assert (registry_module.init_wait_seconds() > 0) == prefetched
        # AND meanwhile the GIL changes hands often enough for the download threads to keep up, and no
        # collection walks the objects the imports create; both are back to normal when init ends
        if prefetched:
            assert while_importing == (registry_module.INIT_SWITCH_INTERVAL, False)
        else:
            assert while_importing == (default, True)
        assert (sys.getswitchinterval(), gc.isenabled()) == (default, True)
    finally:
        gc.unfreeze()
        registry_module.reset()
        get_settings.cache_clear()


def test_the_process_prefetch_leaves_a_missing_configuration_to_the_first_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a Lambda init without TOWERLIGHT_STORE
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    monkeypatch.delenv("TOWERLIGHT_STORE", raising=False)
    get_settings.cache_clear()
    registry_module.reset()
    try:
        # WHEN the prefetch is asked for THEN nothing is raised at import time
        registry_module.prefetch()()
        # AND the first request gets the configuration error
        with pytest.raises(ConfigurationError, match="TOWERLIGHT_STORE"):
            registry_module.get_registry()
    finally:
        registry_module.reset()
        get_settings.cache_clear()


def test_the_end_of_init_waits_for_the_prefetch_only_within_the_init_budget(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a Lambda init whose model loads slower than the init budget allows
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    monkeypatch.setitem(registry_module.INIT_WAIT_SECONDS, "on-demand", 0.3)
    get_settings.cache_clear()
    publish(store_uri, tmp_path, "v1")
    release = threading.Event()

    def slow_loader(store: object, version: str, cache_dir: Path) -> FakeBundle:
        release.wait(5)
        return FakeBundle(version)

    registry = ModelRegistry(store_uri, tmp_path / "cache", REFRESH, loader=slow_loader, clock=Clock())
    registry_module.reset(registry)
    try:
        # WHEN the handler module prefetches and then finishes its init
        finish = registry_module.prefetch()
        started = time.monotonic()
        finish()
        waited = time.monotonic() - started
        # THEN init waited about the budget and no longer; the load goes on and a request gets it
        assert 0.2 <= waited < 2.0
        assert registry.status().version is None
        release.set()
        assert registry.get().version == "v1"
    finally:
        release.set()
        registry_module.reset()
        get_settings.cache_clear()
