"""Versions an experiment pins: loaded once on first use, bounded to the experiment, retried after a back-off."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from towerlight.errors import ConfigurationError, ModelUnavailableError
from towerlight.model.pinned import PinnedModels

CURRENT = SimpleNamespace(version="v1", strategy="two_tower")


class Loader:
    """Counts loads; fails while ``broken``; may hold a load until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.broken = False
        self.release = threading.Event()
        self.release.set()

    def __call__(self, version: str) -> Any:
        self.calls.append(version)
        self.release.wait(5)
        if self.broken:
            raise OSError("connection reset")
        return SimpleNamespace(version=version, strategy="two_tower")


def test_a_pinned_version_is_loaded_once_on_first_use_and_current_is_served_as_itself() -> None:
    # GIVEN an experiment pinning v2 while v1 is CURRENT
    loader = Loader()
    pinned = PinnedModels(["v2"], loader)
    assert loader.calls == [] and pinned.loaded == ()
    # WHEN v2 is asked for twice, and v1 once
    first, second = pinned.get("v2", CURRENT), pinned.get("v2", CURRENT)  # type: ignore[arg-type]
    # THEN v2 was loaded once and kept; v1 is the registry's bundle itself
    assert first is second and first.version == "v2" and loader.calls == ["v2"]
    assert pinned.get("v1", CURRENT) is CURRENT  # type: ignore[arg-type]
    assert pinned.loaded == ("v2",)


def test_only_the_versions_the_experiment_pins_are_ever_loaded() -> None:
    loader = Loader()
    pinned = PinnedModels(["v2"], loader)
    with pytest.raises(ConfigurationError, match="not pinned"):
        pinned.get("v3", CURRENT)  # type: ignore[arg-type]
    assert loader.calls == []


def test_a_version_promoted_to_current_is_dropped_from_the_pinned_ones() -> None:
    # GIVEN v2 loaded as a pinned version
    pinned = PinnedModels(["v2"], Loader())
    pinned.get("v2", CURRENT)  # type: ignore[arg-type]
    # WHEN v2 becomes CURRENT THEN the registry's bundle is served and the pinned copy released
    promoted = SimpleNamespace(version="v2", strategy="two_tower")
    assert pinned.get("v2", promoted) is promoted  # type: ignore[arg-type]
    assert pinned.loaded == ()


def test_a_failed_load_is_a_503_retried_only_after_the_back_off() -> None:
    # GIVEN a pinned version whose download fails
    now = [0.0]
    loader = Loader()
    loader.broken = True
    pinned = PinnedModels(["v2"], loader, clock=lambda: now[0], retry_seconds=300)
    # WHEN it is asked for, then again within the back-off, then after it once the store is fixed
    with pytest.raises(ModelUnavailableError, match="v2 pinned by the experiment could not be loaded"):
        pinned.get("v2", CURRENT)  # type: ignore[arg-type]
    now[0] = 299.0
    with pytest.raises(ModelUnavailableError, match="connection reset"):
        pinned.get("v2", CURRENT)  # type: ignore[arg-type]
    assert loader.calls == ["v2"]
    now[0], loader.broken = 300.0, False
    # THEN only the retry after the back-off loads it
    assert pinned.get("v2", CURRENT).version == "v2"  # type: ignore[arg-type]
    assert loader.calls == ["v2", "v2"]


def test_concurrent_first_requests_share_one_load() -> None:
    # GIVEN a load held in flight
    loader = Loader()
    loader.release.clear()
    pinned = PinnedModels(["v2"], loader)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(pinned.get("v2", CURRENT))) for _ in range(4)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    # WHEN it completes
    loader.release.set()
    for thread in threads:
        thread.join(5)
    # THEN the four requests got the same bundle from a single load
    assert len(results) == 4 and all(r is results[0] for r in results) and loader.calls == ["v2"]
