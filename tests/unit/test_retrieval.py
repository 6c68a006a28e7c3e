"""Retrievers (exact and hnswlib) share one contract; the index builder checks hnsw recall against exact,
indexes each distinct vector once and centres the index (without changing any ranking) only when needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from towerlight.errors import ArtifactError
from towerlight.retrieval import (
    ExactRetriever,
    HnswRetriever,
    LabelGroups,
    inner_products,
    neighbour_recall,
    top_k_excluding,
)
from towerlight_offline.index import IndexQualityError, build_index, distinct_vectors, perturbed_queries

DIM = 32


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return unit_rows(2000, seed=0)


@pytest.fixture(scope="module")
def built(items: np.ndarray, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("index") / "items.hnsw"
    _, indexed = build_index(items, path, queries=unit_rows(200, seed=1), M=16, ef_construction=100)
    return path, indexed


def load(built, ef: int = 100) -> HnswRetriever:
    path, indexed = built
    groups = LabelGroups.from_labels(indexed.vector_of_item)
    return HnswRetriever.load(path, dim=DIM, ef=ef, groups=groups, center=indexed.center)


@pytest.fixture(params=["exact", "hnsw"])
def retriever(request: pytest.FixtureRequest, items: np.ndarray, built):
    if request.param == "exact":
        return ExactRetriever(items)
    return load(built)


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


def test_hnsw_recall_against_exact_is_at_least_95_percent(items: np.ndarray, built) -> None:
    # GIVEN the (centred) index and held-out queries
    queries = unit_rows(300, seed=3)
    # WHEN searching both ways
    approx, approx_scores = load(built).search(queries, 10)
    exact, _ = ExactRetriever(items).search(queries, 10)
    # THEN hnsw finds at least 95% of the true neighbours, and reports their true inner products
    assert neighbour_recall(approx, exact, queries, items) >= 0.95
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
    _, indexed = build_index(small, tmp_path / "small.hnsw", queries=small)
    hnsw = load((tmp_path / "small.hnsw", indexed), ef=10)
    for retriever in (ExactRetriever(small), hnsw):
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


def test_loading_an_index_with_the_wrong_size_fails(built) -> None:
    # WHEN / THEN an index is loaded with another vector count than it holds
    with pytest.raises(ValueError, match="holds 2000 vectors"):
        HnswRetriever.load(built[0], dim=DIM, ef=50, groups=LabelGroups.identity(1999))


def test_neighbour_recall_counts_exact_neighbours_found() -> None:
    # GIVEN four distinct items and approximate / exact top-3 lists (with -1 padding)
    emb = np.eye(4, dtype=np.float32)
    queries = np.array([[4, 3, 2, 1], [1, 2, 3, 4]], dtype=np.float32)
    approx = np.array([[0, 1, 3], [3, 2, 0]])
    exact = np.array([[0, 1, 2], [3, 2, -1]])
    # WHEN / THEN recall is the mean share of exact neighbours found (2 of 3, 2 of 2)
    assert neighbour_recall(approx, exact, queries, emb) == pytest.approx((2 / 3 + 1.0) / 2)


def test_neighbour_recall_counts_ties_as_found_and_never_a_row_twice() -> None:
    # GIVEN rows 1 and 2 with the same vector, and a query for which they tie at the second place
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    query = np.array([[1.0, 0.2]], dtype=np.float32)
    exact = np.array([[0, 1]])
    # WHEN / THEN the tied twin counts as found, a worse row does not, and a repeated row counts once
    assert neighbour_recall(np.array([[0, 2]]), exact, query, emb) == 1.0
    assert neighbour_recall(np.array([[0, 3]]), exact, query, emb) == 0.5
    assert neighbour_recall(np.array([[0, 0]]), exact, query, emb) == 0.5


def test_distinct_vectors_keeps_each_vector_once_in_order_of_appearance() -> None:
    # GIVEN rows where 0, 2 and 4 are copies, and 1 and 3 are copies
    a, b, c = [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]
    rows = np.array([a, b, a, b, a, c], dtype=np.float32)
    # WHEN deduplicating
    vectors, of_row = distinct_vectors(rows)
    # THEN each vector is kept once, first seen first, and every row points at its own vector
    np.testing.assert_array_equal(vectors, np.array([a, b, c], dtype=np.float32))
    assert of_row.tolist() == [0, 1, 0, 1, 0, 2]
    np.testing.assert_array_equal(vectors[of_row], rows)


def test_label_groups_expand_labels_to_their_rows_within_a_budget() -> None:
    # GIVEN rows 0, 2, 3 sharing label 0, row 1 alone with label 1, and row 4 with label 2
    groups = LabelGroups.from_labels(np.array([0, 1, 0, 0, 2]))
    assert groups.n_labels == 3 and groups.rows_of(0).tolist() == [0, 2, 3]
    # WHEN expanding the labels [1, 0, 2] (scores 0.9, 0.5, 0.1) with budgets 10 and 3
    rows, scores = groups.expand(np.array([1, 0, 2]), np.array([0.9, 0.5, 0.1]), 10)
    few, few_scores = groups.expand(np.array([1, 0, 2]), np.array([0.9, 0.5, 0.1]), 3)
    # THEN every row of a label follows it with its score, in label order, cut to the budget
    assert rows.tolist() == [1, 0, 2, 3, 4] and scores.tolist() == [0.9, 0.5, 0.5, 0.5, 0.1]
    assert few.tolist() == [1, 0, 2] and few_scores.tolist() == [0.9, 0.5, 0.5]
    # AND labels that skip a number are refused
    with pytest.raises(ValueError, match="every label"):
        LabelGroups.from_labels(np.array([0, 2]))


def test_index_of_a_catalogue_of_copies_holds_each_vector_once_and_finds_every_tie(tmp_path: Path) -> None:
    # GIVEN 2,000 items of which 1,800 are copies of 8 vectors (items without events nor content look alike)
    distinct = unit_rows(208, seed=7)
    rows = np.concatenate([distinct[:200], distinct[200:][np.arange(1800) % 8]])
    rows = rows[np.random.default_rng(8).permutation(len(rows))]
    queries = unit_rows(200, seed=9)
    # WHEN building the index and searching it
    report, indexed = build_index(rows, tmp_path / "i.hnsw", queries=queries, M=16, ef_construction=100)
    hnsw = load((tmp_path / "i.hnsw", indexed))
    found, scores = hnsw.search(queries, 10)
    # THEN it holds 208 vectors for 2,000 items, and finds what exact search finds
    assert report.vectors == 208 and report.items == 2000 and report.recall >= 0.95
    assert neighbour_recall(found, ExactRetriever(rows).search(queries, 10)[0], queries, rows) >= 0.95
    # AND every returned row is distinct, with its true score, ties included
    assert all(len(set(r)) == 10 for r in found.tolist())
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, rows[found]), atol=1e-5)
    # AND a query equal to a copied vector gets 10 of its 225 copies, and 10 others when those are excluded
    twins = set(np.flatnonzero((rows == distinct[200]).all(axis=1)).tolist())
    first, first_scores = hnsw.search(distinct[200], 10)
    second, _ = hnsw.search(distinct[200], 10, exclude=[set(first[0].tolist())])
    assert len(twins) == 225 and set(first[0].tolist()) <= twins and set(second[0].tolist()) <= twins
    assert not set(first[0].tolist()) & set(second[0].tolist())
    np.testing.assert_allclose(first_scores, 1.0, atol=1e-5)


def test_build_index_reports_and_raises_ef_until_recall_is_met(items: np.ndarray, tmp_path: Path) -> None:
    # GIVEN a deliberately weak graph and a starting ef that is too small for it
    queries = perturbed_queries(items, n=200, noise=1.0)
    # WHEN building with a recall target
    report, _ = build_index(items, tmp_path / "i.hnsw", queries=queries, M=4, ef_construction=20, ef_search=10)
    # THEN the report holds the ef that met the target, and the file is written
    assert report.recall >= 0.95 and report.ef_search > 10
    assert report.M == 4 and report.items == 2000 and report.build_seconds >= 0
    assert (tmp_path / "i.hnsw").stat().st_size > 0


def test_unit_norm_vectors_are_indexed_as_they_are(items: np.ndarray, tmp_path: Path) -> None:
    # GIVEN unit-norm item vectors (as the towers make them)
    # WHEN building the index
    report, indexed = build_index(items, tmp_path / "i.hnsw", queries=unit_rows(200, seed=1), M=16)
    # THEN the first graph, over the vectors themselves, met the target: nothing is subtracted
    assert not report.centred and not indexed.center.any() and report.recall >= 0.95
    assert load((tmp_path / "i.hnsw", indexed)).center is None


def test_the_index_is_centred_when_the_uncentred_graph_misses(
    items: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import towerlight_offline.index as index_module

    # GIVEN an uncentred graph that misses the target at every ef of the ladder (its recall reported as 0)
    real = index_module.neighbour_recall
    ladder = len(index_module._ef_ladder(None, 10))
    calls: list[int] = []

    def recall(found: np.ndarray, exact: np.ndarray, queries: np.ndarray, data: np.ndarray) -> float:
        calls.append(len(calls))
        return 0.0 if len(calls) <= ladder else real(found, exact, queries, data)

    monkeypatch.setattr(index_module, "neighbour_recall", recall)
    queries = unit_rows(200, seed=1)
    # WHEN building the index
    report, indexed = build_index(items, tmp_path / "i.hnsw", queries=queries, M=16)
    # THEN it was rebuilt over the vectors minus their mean, which finds what exact search finds
    assert len(calls) > ladder and report.centred
    np.testing.assert_allclose(indexed.center, items.mean(axis=0), atol=1e-6)
    found, scores = load((tmp_path / "i.hnsw", indexed)).search(queries, 10)
    assert real(found, ExactRetriever(items).search(queries, 10)[0], queries, items) >= 0.95
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, items[found]), atol=1e-5)


def test_build_index_fails_when_recall_cannot_be_met(items: np.ndarray, tmp_path: Path) -> None:
    # GIVEN a recall target no index can reach
    # WHEN / THEN building refuses to write the index, with an artifact error
    with pytest.raises(IndexQualityError) as caught:
        build_index(items, tmp_path / "i.hnsw", queries=None, M=4, ef_construction=10, min_recall=1.01)
    assert isinstance(caught.value, ArtifactError)
    assert not (tmp_path / "i.hnsw").exists()


def test_a_rows_inner_product_does_not_depend_on_the_rows_beside_it() -> None:
    # GIVEN item vectors and a user vector
    rng = np.random.default_rng(3)
    vectors, query = rng.standard_normal((5000, 64)).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    for _ in range(100):
        rows = rng.integers(0, len(vectors), int(rng.integers(2, 200)))
        # WHEN scoring a batch, a part of it, and each row alone
        batch = inner_products(vectors[rows], query)
        part = inner_products(vectors[rows[: len(rows) // 2]], query)
        alone = np.array([inner_products(vectors[r : r + 1], query)[0] for r in rows])
        # THEN every row has the same float32 score, bit for bit, close to the exact product
        np.testing.assert_array_equal(batch[: len(part)], part)
        np.testing.assert_array_equal(batch, alone)
        np.testing.assert_allclose(batch, vectors[rows].astype(np.float64) @ query, rtol=1e-5, atol=1e-5)


# ---- top_k_excluding -----------------------------------------------------------------------------
def test_top_k_excluding_returns_the_best_allowed_columns_best_first() -> None:
    # GIVEN scores where the best column of each row is excluded
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.8]], dtype=np.float32)
    # WHEN the top 2 are taken
    top = top_k_excluding(scores, [np.array([1]), np.array([3, 0])], k=2)
    # THEN they are the best remaining columns, in order
    assert top.tolist() == [[3, 2], [1, 2]]


def test_top_k_excluding_pads_rows_that_run_out_of_items() -> None:
    scores = np.array([[0.3, 0.2, 0.1]], dtype=np.float32)
    top = top_k_excluding(scores, [np.array([0, 2])], k=5)
    assert top.tolist() == [[1, -1, -1]]


def test_top_k_excluding_breaks_ties_by_column_and_ranks_nan_last() -> None:
    # GIVEN rows full of ties (an item-kNN row is mostly zeros) and a NaN
    scores = np.zeros((2, 1000), dtype=np.float32)
    scores[0, 700] = 0.5
    scores[1, 3] = np.nan
    # WHEN the top 4 are taken
    top = top_k_excluding(scores, [np.array([0]), np.array([], dtype=np.int64)], k=4)
    # THEN equal scores come in column order and the NaN is treated as the worst score
    assert top.tolist() == [[700, 1, 2, 3], [0, 1, 2, 4]]


def test_top_k_excluding_agrees_with_a_full_sort() -> None:
    # GIVEN random scores and exclusions
    rng = np.random.default_rng(0)
    scores = rng.random((20, 300)).astype(np.float32)
    exclude = [rng.choice(300, size=rng.integers(0, 50), replace=False) for _ in range(20)]
    expected = []
    for row, banned in zip(scores, exclude, strict=True):
        order = [int(c) for c in np.argsort(-row, kind="stable") if c not in set(banned.tolist())]
        expected.append(order[:10])
    # WHEN the helper picks the top 10
    top = top_k_excluding(scores.copy(), exclude, k=10)
    # THEN it matches sorting everything
    assert top.tolist() == expected
