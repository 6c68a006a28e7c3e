"""The ranker's features (toy data with known answers), offline/online parity, and its JSON export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from towerlight import artifacts
from towerlight.errors import ArtifactError
from towerlight.features import ItemRecord, Vocabulary
from towerlight.model.bundle import Catalogue, CategoryIndex
from towerlight.ranking import compiled_ranker, load_ranking
from towerlight.ranking.features import FEATURE_NAMES, RankingTables, UserHistory, candidate_features
from towerlight.ranking.model import LinearRanker, TreeRanker, ranker_from_json
from towerlight.recommend.strategies import history_rows
from towerlight_offline.ranker import (
    Candidates,
    Examples,
    RankerParams,
    build_ranking_tables,
    features_of,
    fit_linear,
    fit_trees,
    reranked_ndcg,
    save_ranker,
    tree_ranker_from_sklearn,
    user_histories_with_times,
)
from towerlight_offline.ranker_onnx import threshold_below, write_ranker_onnx

DAY = 86_400.0
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
RECORDS = [
    ItemRecord("a", "Star Wars", ["Sci-Fi", "Action"], {}),
    ItemRecord("b", "Star Trek", ["Sci-Fi"], {}),
    ItemRecord("c", "Toy Story", ["Comedy"], {}),
    ItemRecord("d", "Heat", ["Action"], {}),
]


@pytest.fixture
def events() -> pd.DataFrame:
    """a and b always together (users x0..x2); c alone (y0); u watched a (day 1) then d (day 2)."""
    rows = [(f"x{i}", item, 10 * DAY + i) for i in range(3) for item in "ab"]
    rows += [("y0", "c", 40 * DAY), ("u", "a", 1 * DAY), ("u", "d", 2 * DAY)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@pytest.fixture
def tables(events: pd.DataFrame) -> RankingTables:
    return build_ranking_tables(events, RECORDS, RankerParams(neighbours=3, trend_days=10))


def test_features_have_the_values_the_toy_data_implies(events: pd.DataFrame, tables: RankingTables) -> None:
    # GIVEN user u (a on day 1, then d on day 2), asked about b and c on day 3 with tower scores 0.9 and 0.5
    history = user_histories_with_times(events, [r.item_id for r in RECORDS])["u"]
    # WHEN the features are computed
    x = candidate_features(tables, history, 3 * DAY, np.array([1, 2]), np.array([0.9, 0.5]))
    # THEN each has its known value
    assert history.rows.tolist() == [3, 0]
    np.testing.assert_allclose(x[:, F["tower_score"]], [0.9, 0.5])
    # b's cosine with a: 3 common users / sqrt(4 * 3); with d: 0
    cos_ab = 3 / np.sqrt(4 * 3)
    np.testing.assert_allclose(x[:, F["knn_sum"]], [cos_ab / 2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(x[:, F["knn_max"]], [cos_ab, 0.0], rtol=1e-6)
    np.testing.assert_allclose(x[:, F["knn_last"]], [0.0, 0.0])  # the last item (d) is like neither
    np.testing.assert_allclose(x[:, F["popularity"]], np.log1p([3, 1]), rtol=1e-6)
    np.testing.assert_allclose(x[:, F["item_age"]], [0.0, 0.0])  # first seen on days 10 and 40: not yet
    # history a (Sci-Fi, Action) and d (Action): Sci-Fi share 1/2 -> b = 0.5; Comedy share 0 -> c = 0
    np.testing.assert_allclose(x[:, F["category_affinity"]], [0.5, 0.0])
    np.testing.assert_allclose(x[:, F["history_length"]], np.log1p(2))
    np.testing.assert_allclose(x[:, F["since_last_event"]], np.log1p(24.0), rtol=1e-6)
    np.testing.assert_allclose(x[:, F["last_category_overlap"]], [0.0, 0.0])  # d is Action only


def test_content_overlap_with_the_last_item(tables: RankingTables) -> None:
    # GIVEN a user whose last item is a ("Star Wars", Sci-Fi + Action)
    history = UserHistory(np.array([0]), np.array([5 * DAY]))
    # WHEN b ("Star Trek", Sci-Fi) and d ("Heat", Action) are scored
    x = candidate_features(tables, history, 5 * DAY, np.array([1, 3]), np.zeros(2))
    # THEN genre Jaccard is 1/2 for both; only b shares a title word ("star": 1 of 3 words)
    np.testing.assert_allclose(x[:, F["last_category_overlap"]], [0.5, 0.5])
    np.testing.assert_allclose(x[:, F["last_title_overlap"]], [1 / 3, 0.0], rtol=1e-6)
    # AND the items first seen on day 10 are not yet "old" at day 5 (age clipped at 0)
    np.testing.assert_allclose(x[:, F["item_age"]], [0.0, np.log1p(3.0)], rtol=1e-6)


def test_a_user_without_history_gets_zero_user_features(tables: RankingTables) -> None:
    x = candidate_features(tables, UserHistory.empty(), 0.0, np.array([0, 1]), np.array([0.2, 0.1]))
    for name in ("knn_sum", "knn_max", "knn_last", "category_affinity", "history_length", "since_last_event"):
        assert not x[:, F[name]].any(), name


def test_recent_items_without_neighbours_give_zero_knn_features(tables: RankingTables) -> None:
    # GIVEN a user whose only item (c) shares no user with any other item
    x = candidate_features(tables, UserHistory(np.array([2]), np.array([DAY])), DAY, np.array([0, 1]), np.zeros(2))
    # THEN every item-kNN feature is 0
    assert not x[:, [F["knn_sum"], F["knn_max"], F["knn_last"]]].any()


def test_an_items_features_do_not_depend_on_the_other_candidates(tables: RankingTables) -> None:
    history = UserHistory(np.array([3, 0]), np.array([2 * DAY, DAY]))
    together = candidate_features(tables, history, 3 * DAY, np.array([1, 2]), np.array([0.9, 0.5]))
    alone = candidate_features(tables, history, 3 * DAY, np.array([2]), np.array([0.5]))
    np.testing.assert_array_equal(together[1], alone[0])


def test_each_row_is_the_item_scored_alone_whatever_the_lists(tables: RankingTables) -> None:
    # GIVEN random histories (repeated items, longer than RECENT_ITEMS too) and candidate lists with repeats
    rng = np.random.default_rng(7)
    for _ in range(200):
        rows = rng.integers(0, tables.size, rng.integers(0, 30))
        history = UserHistory(rows, np.sort(rng.uniform(0, 20 * DAY, len(rows)))[::-1])
        candidates = rng.integers(0, tables.size, rng.integers(1, 12))
        scores = rng.normal(size=len(candidates))
        # WHEN the list is scored at once, and each item on its own
        together = candidate_features(tables, history, 15 * DAY, candidates, scores)
        alone = [
            candidate_features(tables, history, 15 * DAY, candidates[i : i + 1], scores[i : i + 1])
            for i in range(len(candidates))
        ]
        # THEN the rows are the same numbers, bit for bit
        np.testing.assert_array_equal(together.view(np.uint32), np.concatenate(alone).view(np.uint32))


def test_offline_and_served_features_are_identical(tmp_path: Path, events: pd.DataFrame, tables: RankingTables) -> None:
    # GIVEN tables and a ranker published the way the pipeline publishes them
    ranker = LinearRanker(FEATURE_NAMES, np.zeros(len(F)), np.ones(len(F)), np.linspace(-1, 1, len(F)), 0.1)
    save_ranker(tmp_path, ranker, tables)
    served = load_ranking(tmp_path, catalogue_size=len(RECORDS))
    catalogue = [r.item_id for r in RECORDS]
    histories = user_histories_with_times(events, catalogue)
    candidates = Candidates(["u"], np.array([[1, 2, -1]]), np.array([[0.7, 0.3, -np.inf]], dtype=np.float32))
    # WHEN the offline job computes u's features, and serving computes them from item ids and times
    offline = features_of(tables, histories, {"u": 3 * DAY}, candidates)[0]
    rows, times = history_rows(
        Catalogue(np.asarray(catalogue), Vocabulary(catalogue), CategoryIndex.empty()),
        ("d", "a", "gone"),
        (2 * DAY, DAY, 0.0),
    )
    scores, online = served.rescore(UserHistory(rows, times), 3 * DAY, np.array([1, 2]), np.array([0.7, 0.3]))
    # THEN both are the same numbers, and the served scores are the ranker's on them
    np.testing.assert_array_equal(online, offline)
    np.testing.assert_allclose(scores, ranker.score(online))


def test_served_ranker_must_match_the_feature_list(tmp_path: Path, tables: RankingTables) -> None:
    ranker = LinearRanker(("other",), np.zeros(1), np.ones(1), np.ones(1), 0.0)
    save_ranker(tmp_path, ranker, tables)
    with pytest.raises(ArtifactError, match="expects features"):
        load_ranking(tmp_path, catalogue_size=len(RECORDS))


def _toy_examples(n: int = 600, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(F)))
    y = ((x[:, 0] + 0.5 * x[:, 3] - 0.3 * x[:, 6] + rng.normal(scale=0.5, size=n)) > 0.5).astype(np.int8)
    return Examples(x, y, np.full(n // 20, 20))


def test_tree_ranker_round_trips_through_json_and_matches_scikit_learn() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # GIVEN gradient-boosted trees fitted by scikit-learn
    examples = _toy_examples()
    model = HistGradientBoostingClassifier(max_iter=20, max_depth=4, random_state=0).fit(examples.x, examples.y)
    # WHEN exported to JSON text and loaded back (no pickle anywhere)
    text = json.dumps(tree_ranker_from_sklearn(model, FEATURE_NAMES).to_json())
    loaded = ranker_from_json(json.loads(text))
    # THEN numpy scores equal scikit-learn's decision function
    x = _toy_examples(seed=1).x
    np.testing.assert_allclose(loaded.score(x), model.decision_function(x), atol=1e-9)
    # AND path contributions add up to the score (minus the trees' root values and the baseline)
    roots = loaded.value[loaded.roots].sum() + loaded.baseline
    np.testing.assert_allclose(loaded.contributions(x).sum(axis=1) + roots, loaded.score(x), atol=1e-9)


def _sklearn_trees(seed: int = 0) -> TreeRanker:
    from sklearn.ensemble import HistGradientBoostingClassifier

    examples = _toy_examples(seed=seed)
    model = HistGradientBoostingClassifier(max_iter=30, max_depth=4, random_state=0).fit(examples.x, examples.y)
    return tree_ranker_from_sklearn(model, FEATURE_NAMES)


def test_ranker_onnx_splits_exactly_as_the_json_trees(tmp_path: Path) -> None:
    # GIVEN trees fitted by scikit-learn, written as ranker.onnx
    ranker = _sklearn_trees()
    session = compiled_ranker(write_ranker_onnx(ranker, tmp_path), ranker)
    # WHEN both score float32 rows lying on, just below and just above every split threshold
    inner = np.flatnonzero(ranker.feature >= 0)
    on = ranker.threshold[inner].astype(np.float32)
    x = np.zeros((3 * len(inner), len(F)), dtype=np.float32)
    for i, (node, t) in enumerate(zip(inner, on, strict=True)):
        for j, value in enumerate((np.nextafter(t, np.float32(-np.inf)), t, np.nextafter(t, np.float32(np.inf)))):
            x[3 * i + j, ranker.feature[node]] = value
    compiled = session.run(None, {"x": x})[0][:, 0]
    # THEN every row lands in the same leaves: the scores differ by float32 rounding only, far less than a leaf
    smallest_leaf = np.abs(ranker.value[ranker.feature < 0]).min()
    gap = np.abs(compiled - ranker.score(x)).max()
    assert gap < 1e-5 < smallest_leaf
    # AND each float32 threshold is the largest float32 not above the float64 one
    below = np.array([threshold_below(t) for t in ranker.threshold[inner]])
    assert np.all(below <= ranker.threshold[inner])
    assert np.all(np.nextafter(below.astype(np.float32), np.float32(np.inf)) > ranker.threshold[inner])


def test_served_trees_score_with_onnxruntime_and_refuse_a_ranker_onnx_of_other_trees(
    tmp_path: Path, tables: RankingTables
) -> None:
    # GIVEN a tree ranker published the way the pipeline publishes it
    ranker = _sklearn_trees()
    assert artifacts.RANKER_ONNX in save_ranker(tmp_path, ranker, tables)
    # WHEN serving loads it
    served = load_ranking(tmp_path, catalogue_size=len(RECORDS), compiled=True)
    # THEN onnxruntime scores, as the numpy walk does
    assert served.compiled is not None
    x = _toy_examples(seed=5).x.astype(np.float32)
    np.testing.assert_allclose(served.score(x), ranker.score(x), atol=1e-5)
    # AND a ranker.onnx written from other trees is refused when the version loads
    write_ranker_onnx(_sklearn_trees(seed=7), tmp_path)
    with pytest.raises(ArtifactError, match="disagree"):
        load_ranking(tmp_path, catalogue_size=len(RECORDS), compiled=True)


def test_linear_ranker_round_trips_and_explains_with_its_terms() -> None:
    examples = _toy_examples()
    ranker = fit_linear(examples, RankerParams())
    loaded = ranker_from_json(json.loads(json.dumps(ranker.to_json())))
    x = _toy_examples(seed=2).x
    np.testing.assert_allclose(loaded.score(x), ranker.score(x))
    np.testing.assert_allclose(loaded.contributions(x).sum(axis=1) + loaded.intercept, loaded.score(x))
    # the feature the labels depend on most carries the largest weight
    assert np.argmax(np.abs(ranker.coef)) == 0


def test_both_rankers_beat_a_random_order_on_held_out_users() -> None:
    fit, held = _toy_examples(seed=3), _toy_examples(seed=4)
    counts = np.add.reduceat(held.y, np.r_[0, np.cumsum(held.groups)[:-1]])
    random = reranked_ndcg(np.random.default_rng(0).random(len(held.y)), held, counts)
    for fitter in (fit_linear, fit_trees):
        assert reranked_ndcg(fitter(fit, RankerParams(trees=30)).score(held.x), held, counts) > random + 0.2


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "linear", "features": ["a"], "mean": [0, 1], "scale": [1], "coef": [1], "intercept": 0},
        {"type": "forest"},
        {
            "type": "trees",
            "features": ["a"],
            "baseline": 0,
            "depth": 1,
            "roots": [0],
            "feature": [-1],
            "threshold": [None],
            "missing_left": [1],
            "left": [5],
            "right": [0],
            "value": [0.0],
        },
    ],
)
def test_malformed_rankers_are_refused(broken: dict) -> None:
    with pytest.raises(ValueError):
        ranker_from_json(broken)
