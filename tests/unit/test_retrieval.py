"""Retrievers (exact and hnswlib) share one contract; the index builder checks hnsw recall against exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from towerlight.errors import ArtifactError
from towerlight.retrieval import ExactRetriever, HnswRetriever, recall_at_k
from towerlight_offline.index import IndexQualityError, build_index, perturbed_queries

DIM = 32


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return unit_rows(2000, seed=0)


@pytest.fixture(scope="module")
def index_path(items: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("index") / "items.hnsw"
    build_index(items, path, queries=unit_rows(200, seed=1), M=16, ef_construction=100)
    return path


@pytest.fixture(params=["exact", "hnsw"])
def retriever(request: pytest.FixtureRequest, items: np.ndarray, index_path: Path):
    if request.param == "exact":
        return ExactRetriever(items)
    return HnswRetriever.load(index_path, dim=DIM, n=len(items), ef=100)


def test_exact_retriever_returns_the_true_top_k(items: np.ndarray) -> None:
    # GIVEN random queries
    queries = unit_rows(5, seed=2)
    # WHEN searching exactly
    labels, scores = ExactRetriever(items).search(queries, 7)
    # THEN the result is the brute-force top 7, best first, with the inner products as scores
    brute = np.argsort(-(queries @ items.T), axis=1)[:, :7]
    np.testing.assert_array_equal(labels, brute)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, brute, axis=1), rtol=1e-5)
    assert labels.dtype == np.int64 and (np.diff(scores, axis=1) <= 0).all()


def test_hnsw_recall_against_exact_is_at_least_95_percent(items: np.ndarray, index_path: Path) -> None:
    # GIVEN the index and held-out queries
    queries = unit_rows(300, seed=3)
    # WHEN searching both ways
    approx, approx_scores = HnswRetriever.load(index_path, dim=DIM, n=len(items), ef=100).search(queries, 10)
    exact, _ = ExactRetriever(items).search(queries, 10)
    # THEN hnsw finds at least 95% of the true neighbours, with the same kind of scores
    assert recall_at_k(approx, exact) >= 0.95
    np.testing.assert_allclose(approx_scores, np.take_along_axis(queries @ items.T, approx, axis=1), atol=1e-5)


def test_exclusion_removes_items_and_still_returns_k(retriever, items: np.ndarray) -> None:
    # GIVEN a query whose best items are excluded
    queries = unit_rows(2, seed=4)
    best, _ = ExactRetriever(items).search(queries, 5)
    exclude = [set(best[0].tolist()), set()]
    # WHEN searching with the exclusion
    labels, scores = retriever.search(queries, 5, exclude=exclude)
    # THEN no excluded item comes back, k are still returned, and the unrestricted row is unchanged
    assert labels.shape == (2, 5)
    assert not exclude[0] & set(labels[0].tolist())
    assert (labels[0] >= 0).all() and np.isfinite(scores).all()
    assert labels[1].tolist() == best[1].tolist()


def test_k_larger_than_the_catalogue_returns_every_item(tmp_path: Path) -> None:
    # GIVEN a catalogue of 4 items, in both retrievers
    small = unit_rows(4, seed=5)
    build_index(small, tmp_path / "small.hnsw", queries=small)
    for retriever in (ExactRetriever(small), HnswRetriever.load(tmp_path / "small.hnsw", dim=DIM, n=4, ef=10)):
        # WHEN asking for 10 items, and for 10 minus 3 excluded
        labels, _ = retriever.search(small[:1], 10)
        short, short_scores = retriever.search(small[:1], 10, exclude=[{1, 2, 3}])
        # THEN every item comes back once, and missing places are padded with -1 / -inf
        assert sorted(labels[0].tolist()) == [0, 1, 2, 3]
        assert short[0].tolist() == [0, -1, -1, -1]
        assert np.isneginf(short_scores[0, 1:]).all()


def test_retrievers_validate_their_inputs(items: np.ndarray) -> None:
    # GIVEN an exact retriever
    retriever = ExactRetriever(items)
    # WHEN / THEN a wrong query width or exclusion count is refused, a 1-D query is one row, and k=0 is empty
    with pytest.raises(ValueError, match="shape"):
        retriever.search(np.zeros((1, DIM + 1)), 3)
    with pytest.raises(ValueError, match="exclude"):
        retriever.search(np.zeros((2, DIM)), 3, exclude=[set()])
    assert retriever.search(items[0], 3)[0].shape == (1, 3)
    assert retriever.search(items[:2], 0)[0].shape == (2, 0)


def test_loading_an_index_with_the_wrong_size_fails(items: np.ndarray, index_path: Path) -> None:
    # WHEN / THEN an index is loaded with another item count than it holds
    with pytest.raises(ValueError, match="holds 2000 items"):
        HnswRetriever.load(index_path, dim=DIM, n=1999, ef=50)


def test_recall_at_k_counts_shared_labels() -> None:
    # GIVEN approximate and exact top-3 lists (with -1 padding)
    approx = np.array([[1, 2, 9], [4, 5, 6]])
    exact = np.array([[1, 2, 3], [6, 5, -1]])
    # WHEN / THEN recall is the mean share of exact neighbours found
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1.0) / 2)


def test_build_index_reports_and_raises_ef_until_recall_is_met(items: np.ndarray, tmp_path: Path) -> None:
    # GIVEN a deliberately weak graph and a starting ef that is too small for it
    queries = perturbed_queries(items, n=200, noise=1.0)
    # WHEN building with a recall target
    report = build_index(items, tmp_path / "i.hnsw", queries=queries, M=4, ef_construction=20, ef_search=10)
    # THEN the report holds the ef that met the target, and the file is written
    assert report.recall >= 0.95 and report.ef_search > 10
    assert report.M == 4 and report.items == 2000 and report.build_seconds >= 0
    assert (tmp_path / "i.hnsw").stat().st_size > 0


def test_build_index_fails_when_recall_cannot_be_met(items: np.ndarray, tmp_path: Path) -> None:
    # GIVEN a recall target no index can reach
    # WHEN / THEN building refuses to write the index, with an artifact error
    with pytest.raises(IndexQualityError) as caught:
        build_index(items, tmp_path / "i.hnsw", queries=None, M=4, ef_construction=10, min_recall=1.01)
    assert isinstance(caught.value, ArtifactError)
    assert not (tmp_path / "i.hnsw").exists()
