"""The published artifact format, read back by serving: a real trained version round-trips through the store
(checksums verified), its float16 item vectors and centred, deduplicated index rank as exact search does,
versions in the earlier format still load, and an inconsistent items.npz is refused."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import pytest

from towerlight import artifacts
from towerlight.errors import ArtifactError
from towerlight.model.bundle import load_bundle
from towerlight.retrieval import ExactRetriever, neighbour_recall
from towerlight.store import open_store
from towerlight.store.versions import download_version

Model = tuple[str, dict[str, Any]]


@pytest.fixture
def downloaded(trained_model: Model, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    store_uri, manifest = trained_model
    return download_version(open_store(store_uri), manifest["version"], tmp_path / "download")


def rewrite_items(model_dir: Path, **changes: np.ndarray | None) -> None:
    """Replace (or drop, with None) arrays of the downloaded items.npz in place."""
    with np.load(model_dir / artifacts.ITEMS, allow_pickle=False) as items:
        arrays = {key: items[key] for key in items.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(model_dir / artifacts.ITEMS, **arrays)


def test_a_published_version_round_trips_and_its_index_ranks_as_exact_search(downloaded) -> None:
    # GIVEN a trained version downloaded from the store (every file checked against its sha256)
    model_dir, manifest = downloaded
    with np.load(model_dir / artifacts.ITEMS, allow_pickle=False) as items:
        vectors, of_item = items["vectors"], items["vector_of_item"]
    # WHEN serving loads it
    tower = load_bundle(model_dir, manifest).two_tower
    assert tower is not None
    # THEN every item's embedding is its float16 vector, and the index holds each distinct vector once
    assert vectors.dtype == np.float16 and len(vectors) == manifest["index"]["vectors"]
    np.testing.assert_array_equal(tower.embeddings, vectors.astype(np.float32)[of_item])
    assert tower.embeddings.table.dtype == np.float16  # held as published; widened per request, row by row
    assert tower.embeddings[[0, 1]].dtype == np.float32
    # AND the centred index finds what exact search over the served embeddings finds, with the true scores
    queries = np.stack([tower.user_vector(h, None) for h in (["1", "50"], ["181"], [], ["96", "174", "172"])])
    found, scores = tower.retriever.search(queries, 10)
    exact, _ = ExactRetriever(tower.embeddings).search(queries, 10)
    assert neighbour_recall(found, exact, queries, tower.embeddings) >= 0.95
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, tower.embeddings[found]), atol=1e-5)


def test_a_version_in_the_earlier_format_still_loads(downloaded) -> None:
    # GIVEN a version as written before: float32 embeddings per item and an uncentred index of them
    model_dir, manifest = downloaded
    with np.load(model_dir / artifacts.ITEMS, allow_pickle=False) as items:
        embeddings = items["vectors"].astype(np.float32)[items["vector_of_item"]]
    rewrite_items(model_dir, vectors=None, vector_of_item=None, index_center=None, embeddings=embeddings)
    index = hnswlib.Index(space="ip", dim=embeddings.shape[1])
    index.init_index(max_elements=len(embeddings), M=16, ef_construction=100)
    index.add_items(embeddings, np.arange(len(embeddings)))
    index.save_index(str(model_dir / artifacts.INDEX))
    # WHEN serving loads it
    tower = load_bundle(model_dir, manifest).two_tower
    # THEN it serves row by row from the old arrays
    assert tower is not None and tower.retriever.size == len(embeddings)
    found, _ = tower.retriever.search(embeddings[:3], 1)
    assert found[:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vector_of_item": np.zeros(3, dtype=np.int32)}, "do not fit"),
        ({"index_center": None}, "lacks the array 'index_center'"),
        ("out_of_range", "outside vectors"),
        ("unused_vector", "belong to no item"),
    ],
)
def test_an_inconsistent_items_file_is_refused(downloaded, tmp_path: Path, change: Any, message: str) -> None:
    # GIVEN a downloaded version whose items.npz no longer matches its catalogue or index
    model_dir, manifest = downloaded
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    with np.load(broken / artifacts.ITEMS, allow_pickle=False) as items:
        of_item, vectors = items["vector_of_item"], items["vectors"]
    if change == "out_of_range":
        change = {"vector_of_item": np.full_like(of_item, len(vectors))}
    elif change == "unused_vector":
        change = {"vectors": np.concatenate([vectors, vectors[:1]])}
    rewrite_items(broken, **change)
    # WHEN / THEN serving refuses to load it, with an artifact error that says what is wrong
    with pytest.raises(ArtifactError, match=message):
        load_bundle(broken, manifest)
