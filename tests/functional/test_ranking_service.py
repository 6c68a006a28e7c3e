"""The recommend service re-ranks two-tower candidates with the published ranker (real trained model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from towerlight.db.promotions import Promotion
from towerlight.model.registry import load_version
from towerlight.recommend.service import RecommendationService, RecommendQuery, UserSignals, user_context
from towerlight.recommend.strategies import DEFAULT_HYBRID_WEIGHTS, RankedScorer, scorer_for
from towerlight.store import open_store

HISTORY = ("1", "71", "95", "588", "99", "418")  # Toy Story, Lion King, Aladdin, Beauty and the Beast, ...
TIMES = tuple(893_000_000.0 - 3_600.0 * i for i in range(len(HISTORY)))


class OneUser:
    def user(self, user_id: str, lookback: int, *, attributes: bool) -> UserSignals:
        return UserSignals(HISTORY, frozenset(), {}, times=TIMES)

    def inactive_items(self) -> frozenset[str]:
        return frozenset()

    def promotions(self) -> tuple[Promotion, ...]:
        return ()


def test_the_ranker_reorders_the_candidates_and_explains_them(
    trained_model: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    # GIVEN the published version (with its ranker) and the same version without it
    store_uri, manifest = trained_model
    bundle = load_version(open_store(store_uri), manifest["version"], tmp_path)
    assert bundle.ranking is not None
    ranked = RecommendationService(lambda: bundle, OneUser(), candidates=50)
    plain = RecommendationService(lambda: replace(bundle, ranking=None), OneUser(), candidates=50)
    # WHEN both recommend 10 items to a user who watched six animated films
    result = ranked.recommend("42", RecommendQuery(k=10, strategy="two_tower", explain=True))
    two_tower = [i.item_id for i in plain.recommend("42", RecommendQuery(k=10, strategy="two_tower")).items]
    # THEN the ranker's list is ordered by its scores, drawn from the two-tower top-50, and differs from its top-10
    items = result.items
    scores = [i.score for i in items]
    assert scores == sorted(scores, reverse=True) and len(items) == 10 and result.strategy == "two_tower"
    top50 = {i.item_id for i in plain.recommend("42", RecommendQuery(k=50, strategy="two_tower")).items}
    assert {i.item_id for i in items} <= top50 and [i.item_id for i in items] != two_tower
    assert not {i.item_id for i in items} & set(HISTORY)
    # AND each item's explanation names the ranker's positive feature contributions
    features = set(bundle.ranking.ranker.features)
    for item in items:
        ranker = item.reasons["ranker"]
        assert ranker and all(r["feature"] in features and r["contribution"] > 0 for r in ranker)


def test_rank_agrees_with_the_recommendation_order(trained_model: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    store_uri, manifest = trained_model
    bundle = load_version(open_store(store_uri), manifest["version"], tmp_path)
    service = RecommendationService(lambda: bundle, OneUser())
    recommended = [i.item_id for i in service.recommend("42", RecommendQuery(k=5, strategy="two_tower")).items]
    # WHEN the same items are ranked in reverse order, with an unknown id
    result = service.rank("42", [*reversed(recommended), "no-such-item"], strategy="two_tower")
    # THEN they come back in the recommendation order, the unknown one last without a score
    assert [i.item_id for i in result.items] == [*recommended, "no-such-item"]
    assert result.items[-1].score is None


def test_ranker_scores_do_not_depend_on_how_rows_are_asked_for(
    trained_model: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    # GIVEN a user's ranked scorer, and the ranker applied directly to a batch of rows
    store_uri, manifest = trained_model
    bundle = load_version(open_store(store_uri), manifest["version"], tmp_path)
    user = OneUser().user("42", 200, attributes=False)
    context = user_context(bundle, user, "two_tower", {"two_tower"})
    scorer = scorer_for(context, "two_tower", DEFAULT_HYBRID_WEIGHTS, 50)
    assert isinstance(scorer, RankedScorer)
    rows = np.array([40, 7, 300, 12, 7, 99])
    direct = bundle.ranking.rescore(scorer._user, context.now, rows, scorer.retrieval.scores(rows))[0]
    # WHEN the scorer is asked in overlapping pieces (repeats, rows seen before, new ones, in another order)
    first = scorer.scores(rows[:3])
    second = scorer.scores(rows[::-1])
    # THEN every row gets the score the ranker gives it, wherever and however often it is asked for
    np.testing.assert_array_equal(first, direct[:3].astype(np.float32))
    np.testing.assert_array_equal(second, direct[::-1].astype(np.float32))
    assert scorer.scores(np.array([], dtype=np.int64)).shape == (0,)
