"""``towerlight evaluate`` scores content and hybrid with the serving code: its lists are what recommend serves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_ranking_service import HISTORY, TIMES, OneUser

from towerlight.model.registry import load_version
from towerlight.recommend.service import RecommendationService, RecommendQuery, UserSignals
from towerlight.recommend.strategies import HybridWeights
from towerlight.store import open_store
from towerlight_offline.served import ServedUser, served_recommender

WEIGHTS = HybridWeights.parse("two_tower:0.6,content:0.25,popularity:0.15")


@pytest.mark.parametrize("strategy", ["content", "hybrid"])
def test_the_evaluation_recommends_what_the_service_serves(
    strategy: str, trained_model: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    # GIVEN a published version (without its ranker: the service's clock would then move its time features)
    store_uri, manifest = trained_model
    bundle = replace(load_version(open_store(store_uri), manifest["version"], tmp_path), ranking=None)
    service = RecommendationService(lambda: bundle, OneUser(), weights=WEIGHTS)
    seen = np.unique(bundle.catalogue.rows_of(HISTORY))
    user = ServedUser(UserSignals(HISTORY, frozenset(), {}, times=TIMES), seen, now=TIMES[0] + 86_400.0)
    # WHEN the evaluation and the service recommend 20 items to the same user
    evaluated = served_recommender(bundle, strategy, WEIGHTS, {"42": user})(["42"], 20)[0]
    served = service.recommend("42", RecommendQuery(k=20, strategy=strategy))
    # THEN the lists are the same, none of the seen items among them
    assert served.strategy == strategy
    assert evaluated == [item.item_id for item in served.items]
    assert len(evaluated) == 20 and not set(evaluated) & set(HISTORY)
