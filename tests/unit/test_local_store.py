"""The local artifact store that `towerlight serve`, `train` and `models` share when TOWERLIGHT_STORE is unset."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from towerlight.config import get_settings
from towerlight.store import open_store
from towerlight.store.versions import promote, publish_version
from towerlight_offline.cli import main
from towerlight_offline.local.store import default_store_dir, ensure_store_uri


@pytest.fixture
def no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TOWERLIGHT_STORE unset and the user data directory (XDG_DATA_HOME) in ``tmp_path``; both restored after."""
    monkeypatch.setenv("TOWERLIGHT_STORE", "unset below: undo restores what was there before")
    monkeypatch.delenv("TOWERLIGHT_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data" / "towerlight" / "store"
    monkeypatch.undo()
    get_settings.cache_clear()


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWERLIGHT_STORE", "s3://bucket/towerlight")
    assert ensure_store_uri() == "s3://bucket/towerlight"


def test_without_a_store_the_local_directory_is_created_and_exported(no_store: Path) -> None:
    # WHEN asking for a store with none configured
    uri = ensure_store_uri()
    # THEN it is the local directory, created, exported, and what the settings now read
    assert default_store_dir() == no_store
    assert uri == no_store.as_uri()
    assert no_store.is_dir()
    assert os.environ["TOWERLIGHT_STORE"] == uri
    assert get_settings().require_store() == uri


def test_models_list_reads_the_local_store_with_nothing_configured(
    no_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a version published and promoted in the local store (as `towerlight train` or `serve` would find it)
    no_store.mkdir(parents=True)
    store = open_store(no_store.as_uri())
    (tmp_path / "ranker.json").write_text("{}")
    publish_version(store, "20261130T220000Z-0a1b2c", {"ranker.json": tmp_path / "ranker.json"}, {})
    promote(store, "20261130T220000Z-0a1b2c")
    # WHEN listing models without TOWERLIGHT_STORE
    code = main(["models", "list"])
    # THEN the command succeeds and shows that version as CURRENT
    out = capsys.readouterr().out
    assert code == 0
    assert "20261130T220000Z-0a1b2c" in out and "CURRENT" in out
