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
