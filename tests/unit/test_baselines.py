"""Baselines on toy data whose answer is known, and the published popularity artifact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from towerlight.features import FeatureSpec
from towerlight_offline.baselines import (
    ALSBaseline,
    BaselineParams,
    ItemKNNBaseline,
    PopularityBaseline,
    build_baselines,
    item_cosine_neighbours,
)
from towerlight_offline.evaluate import InteractionMatrix, scoring_recommender
from towerlight_offline.popularity import build_popularity, user_segment_tokens

CATALOGUE = ["a", "b", "c", "d", "e", "f"]
DAY = 86_400


@pytest.fixture
def co_watched() -> InteractionMatrix:
    """Two taste groups: {a, b, c} and {d, e}; "f" is watched by nobody. u_a has only "a", u_d only "d"."""
    rows = [(f"x{i}", item) for i in range(6) for item in "abc"]
    rows += [(f"y{i}", item) for i in range(3) for item in "de"]
    rows += [("u_a", "a"), ("u_d", "d")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    return InteractionMatrix.build(frame, CATALOGUE)


def test_popularity_ranks_by_training_counts(co_watched: InteractionMatrix) -> None:
    recommend = scoring_recommender(PopularityBaseline().fit(co_watched).score, co_watched)
    assert recommend(["u_d"], 3) == [["a", "b", "c"]]


def test_item_knn_recommends_what_similar_users_watched(co_watched: InteractionMatrix) -> None:
    # GIVEN kNN fitted on two taste groups
    recommend = scoring_recommender(ItemKNNBaseline(neighbours=10).fit(co_watched).score, co_watched)
    # WHEN users who watched one item of each group ask for recommendations
    # THEN they get the rest of their own group first
    assert sorted(recommend(["u_a"], 2)[0]) == ["b", "c"]
    assert recommend(["u_d"], 1) == [["e"]]


def test_als_recommends_what_similar_users_watched(co_watched: InteractionMatrix) -> None:
    # two factors for two taste groups: the toy answer does not depend on the random start
    model = ALSBaseline(factors=2, regularization=0.1, iterations=30, seed=0).fit(co_watched)
    recommend = scoring_recommender(model.score, co_watched)
    assert sorted(recommend(["u_a"], 2)[0]) == ["b", "c"]
    assert recommend(["u_d"], 1) == [["e"]]


def test_item_cosine_matches_a_dense_computation() -> None:
    # GIVEN a random binary matrix
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 25)) < 0.2).astype(np.float32)
    # WHEN similarities are computed in small blocks without pruning
    similarity = item_cosine_neighbours(sp.csr_matrix(dense), neighbours=25, block_items=7).toarray()
    # THEN they equal the dense cosine with the diagonal removed
    norms = np.linalg.norm(dense, axis=0)
    expected = (dense.T @ dense) / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(similarity, expected, atol=1e-6)


def test_item_cosine_keeps_the_top_neighbours_of_each_item() -> None:
    rng = np.random.default_rng(1)
    binary = sp.csr_matrix((rng.random((60, 30)) < 0.3).astype(np.float32))
    full = item_cosine_neighbours(binary, neighbours=30).toarray()
    pruned = item_cosine_neighbours(binary, neighbours=3).toarray()
    assert ((pruned > 0).sum(axis=1) <= 3).all()
    for row_full, row_pruned in zip(full, pruned, strict=True):
        kept = row_pruned[row_pruned > 0]
        assert np.allclose(np.sort(kept), np.sort(row_full)[-len(kept) :])


def test_build_baselines_returns_each_model_once() -> None:
    assert [b.name for b in build_baselines(BaselineParams())] == ["popularity", "item_knn", "als"]


# ---- the popularity artifact ---------------------------------------------------------------------
@pytest.fixture
def audience() -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame(
        {
            "user_id": [f"f{i}" for i in range(3)] + [f"m{i}" for i in range(3)],
            "attributes": [{"gender": "F"}] * 3 + [{"gender": "M"}] * 3,
        }
    )
    now = 1000 * DAY
    rows = [(f"f{i}", "romance", now) for i in range(3)]  # recent, women
    rows += [(f"m{i}", "action", now - DAY) for i in range(3)]  # recent, men
    rows += [(u, "classic", now - 365 * DAY) for u in users["user_id"]]  # everybody, a year ago
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return interactions, users


def test_recent_events_outweigh_older_ones(audience: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # GIVEN 6 year-old events on "classic" and 3 recent ones on each of two other items
    interactions, users = audience
    # WHEN popularity decays with a 30-day half-life
    arrays = build_popularity(interactions, users, half_life_days=30, min_segment_users=1)
    # THEN the recent items come first, best score 1.0, scores descending
    assert arrays["item_ids"].tolist() == ["romance", "action", "classic"]
    assert arrays["scores"][0] == pytest.approx(1.0)
    assert np.all(np.diff(arrays["scores"]) <= 0)
    # AND without decay the item everybody watched would win
    flat = build_popularity(interactions, users, half_life_days=1e9, min_segment_users=1)
    assert flat["item_ids"][0] == "classic"


def test_segments_rank_each_audience_separately(audience: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    interactions, users = audience
    arrays = build_popularity(interactions, users, min_segment_users=1, top_n=1)
    segments = arrays["segments"].tolist()
    assert segments == ["gender=F", "gender=M"]
    offsets, members = arrays["segment_offsets"], arrays["segment_items"]
    firsts = [arrays["item_ids"][members[offsets[s]]] for s in range(len(segments))]
    assert firsts == ["romance", "action"]
    # the men's favourite is outside the global top 1 but still published, as a row of item_ids
    assert arrays["item_ids"].tolist() == ["romance", "action"]
    assert arrays["segment_items"].dtype == np.int64 and arrays["segment_offsets"].dtype == np.int64


def test_small_segments_are_left_out(audience: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    interactions, users = audience
    assert build_popularity(interactions, users, min_segment_users=4)["segments"].tolist() == []


def test_segment_tokens_follow_the_feature_spec_buckets() -> None:
    spec = FeatureSpec.fit([], [{"age": a, "gender": "F"} for a in (10, 20, 30, 40)], numeric_buckets=2)
    assert user_segment_tokens(spec, {"age": 35, "gender": "F"}) == ["age#1", "gender=F"]
    assert user_segment_tokens(spec, {"gender": "unknown-value"}) == []
    assert user_segment_tokens(spec, None) == []


def test_shrinkage_damps_pairs_seen_by_few_users() -> None:
    # GIVEN items a, b seen together by 1 user, and c, d seen together by 10
    rows = [[1, 1, 0, 0]] + [[0, 0, 1, 1]] * 10
    binary = sp.csr_matrix(np.array(rows, dtype=np.float32))
    # WHEN similarities are shrunk by 5
    plain = item_cosine_neighbours(binary, 3).toarray()
    shrunk = item_cosine_neighbours(binary, 3, shrinkage=5.0).toarray()
    # THEN both pairs have cosine 1, but the shrunk a-b pair is 1 / (1 + 5) and c-d is 10 / (10 + 5)
    assert plain[0, 1] == pytest.approx(1.0) and plain[2, 3] == pytest.approx(1.0)
    assert shrunk[0, 1] == pytest.approx(1 / 6) and shrunk[2, 3] == pytest.approx(10 / 15)


def test_tuning_picks_the_best_validation_score_and_never_reads_test() -> None:
    from towerlight_offline.baselines import TuningGrid, tune_baselines
    from towerlight_offline.split import Split

    # GIVEN a validation split: x and y users' last items (c, f) were watched earlier by z and w users
    rows = [(f"x{i}", item, t) for i in range(8) for t, item in enumerate("abc")]
    rows += [(f"y{i}", item, t) for i in range(8) for t, item in enumerate("def")]
    rows += [(f"z{i}", item, 0) for i in range(4) for item in "abc"]
    rows += [(f"w{i}", item, 0) for i in range(4) for item in "def"]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    validation = Split(frame[frame["timestamp"] < 2], frame[frame["timestamp"] == 2])
    grid = TuningGrid(
        knn_neighbours=(1, 3),
        knn_shrinkage=(0.0,),
        als_factors=(2,),
        als_regularization=(0.1, 1e4),
        als_iterations=(10,),
        als_alpha=(1.0,),
    )
    # WHEN the grid is tuned
    tuning = tune_baselines(validation, CATALOGUE, grid, BaselineParams(threads=1))
    # THEN every combination was tried once, and each chosen value is the best validation score of its model
    assert len(tuning.trials) == 2 + 2
    for model, keys in (("item_knn", ("knn_neighbours",)), ("als", ("als_regularization",))):
        trials = [t for t in tuning.trials if t["model"] == model]
        best = max(trials, key=lambda t: t["ndcg@10"])
        assert all(getattr(tuning.params, k) == best[k] for k in keys)
    # AND an absurd regularisation (every factor ~0) scores worse and is not the chosen one
    als = {t["als_regularization"]: t["ndcg@10"] for t in tuning.trials if t["model"] == "als"}
    assert als[0.1] > als[1e4] and tuning.params.als_regularization == 0.1
