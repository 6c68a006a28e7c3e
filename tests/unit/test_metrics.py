"""Ranking metrics on hand-computed examples, the shared top-k helper and the evaluation runner."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from towerlight_offline.evaluate import (
    EvaluationSet,
    InteractionMatrix,
    catalogue_coverage,
    evaluate_recommender,
    ndcg_at_k,
    recall_at_k,
    scoring_recommender,
    top_k_excluding,
)
from towerlight_offline.split import Split


def _frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame([(u, i, t) for t, (u, i) in enumerate(rows)], columns=["user_id", "item_id", "timestamp"])


# ---- metrics -------------------------------------------------------------------------------------
def test_recall_counts_hits_in_the_top_k_over_all_relevant_items() -> None:
    assert recall_at_k(["a", "b", "c", "d"], {"b", "d", "z"}, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "b", "c", "d"], {"b", "d", "z"}, k=4) == pytest.approx(2 / 3)
    assert recall_at_k(["a"], set(), k=10) == 0.0


def test_ndcg_uses_binary_gains_and_an_ideal_over_min_relevant_k() -> None:
    # hits at ranks 2 and 4; ideal = two hits at ranks 1 and 2
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(["a", "b", "c", "d"], {"b", "d"}, k=4) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / ideal
    )
    assert ndcg_at_k(["a", "b", "c", "d"], {"b", "d"}, k=3) == pytest.approx((1 / math.log2(3)) / ideal)
    # more relevant items than k: the ideal is k hits, so a perfect top-k scores 1
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, k=2) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}, k=2) == 0.0


def test_coverage_is_the_share_of_the_catalogue_shown_in_some_top_k() -> None:
    assert catalogue_coverage([["a", "b"], ["a", "c"]], catalogue_size=10, k=2) == pytest.approx(0.3)
    assert catalogue_coverage([["a", "b"], ["a", "c"]], catalogue_size=10, k=1) == pytest.approx(0.1)
    assert catalogue_coverage([], catalogue_size=0) == 0.0


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


# ---- runner --------------------------------------------------------------------------------------
@pytest.fixture
def toy_split() -> Split:
    train = _frame([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u3", "c")])
    test = _frame([("u1", "c"), ("u1", "a"), ("u2", "b"), ("u2", "d"), ("u3", "c")])
    return Split(train, test)


def test_evaluation_set_drops_held_out_items_already_in_train(toy_split: Split) -> None:
    # WHEN the ground truth is built
    evaluation = EvaluationSet.from_split(toy_split, catalogue_size=4)
    # THEN u1's "a" (also in train) is not relevant and u3 (only a repeat) is not evaluated
    assert evaluation.user_ids == ["u1", "u2"]
    assert evaluation.relevant == [frozenset({"c"}), frozenset({"b", "d"})]


def test_an_oracle_scores_one_and_a_wrong_model_zero(toy_split: Split) -> None:
    evaluation = EvaluationSet.from_split(toy_split, catalogue_size=4)
    truth = dict(zip(evaluation.user_ids, evaluation.relevant, strict=True))

    def oracle(users: list[str], k: int) -> list[list[str]]:
        return [sorted(truth[u])[:k] for u in users]

    def wrong(users: list[str], k: int) -> list[list[str]]:
        return [["zzz"] for _ in users]

    best = evaluate_recommender("oracle", oracle, evaluation, k_values=(1, 2))
    worst = evaluate_recommender("wrong", wrong, evaluation, k_values=(1, 2))
    assert best["recall@2"] == best["ndcg@2"] == 1.0
    assert best["recall@1"] == pytest.approx((1 + 0.5) / 2)
    assert best["coverage@2"] == pytest.approx(3 / 4)
    assert worst["recall@2"] == worst["ndcg@2"] == 0.0
    assert best["users"] == worst["users"] == 2


def test_scoring_recommender_never_recommends_training_items(toy_split: Split) -> None:
    # GIVEN a scorer that prefers the items users already have
    matrix = InteractionMatrix.build(toy_split.train, ["a", "b", "c", "d"])
    preference = np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)
    recommend = scoring_recommender(lambda rows: np.tile(preference, (len(rows), 1)), matrix)
    # WHEN it recommends
    recommended = recommend(["u1", "u2", "u3"], 4)
    # THEN training items are skipped and the rest keep the score order
    assert recommended == [["c", "d"], ["b", "c", "d"], ["a", "b", "d"]]


def test_max_users_samples_the_same_users_for_the_same_seed() -> None:
    train = _frame([(f"u{i}", "a") for i in range(50)])
    test = _frame([(f"u{i}", "b") for i in range(50)])
    a = EvaluationSet.from_split(Split(train, test), max_users=10, seed=1)
    b = EvaluationSet.from_split(Split(train, test), max_users=10, seed=1)
    c = EvaluationSet.from_split(Split(train, test), max_users=10, seed=2)
    assert a.user_ids == b.user_ids and len(a.user_ids) == 10
    assert a.user_ids != c.user_ids
