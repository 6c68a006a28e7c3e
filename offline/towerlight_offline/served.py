"""The strategies as served, scored offline: a bundle of the train-split model and the serving scorers.

``content`` and ``hybrid`` exist only in serving (``towerlight.recommend.strategies``): rather than
re-implement them, the evaluation writes the artifacts a version would publish — from the model fitted
on the train split and the train events only — loads them with ``towerlight.model.bundle.load_bundle``
and asks the serving scorers for each test user's top k, replaying the request at the time of the user's
first held-out event. The figures therefore describe what the recommend function would have returned
(hnswlib search, ranker, TF-IDF profile, hybrid normalisation), under the DESIGN.md protocol: every
training item of the user is excluded.

Example::

    >>> bundle = evaluation_bundle(fitted, prepared, dataset, config, Path(tmp), stages)
    >>> recommend = served_recommender(bundle, "content", DEFAULT_HYBRID_WEIGHTS, served_users(prepared, bundle))
    >>> recommend(["196"], 3)
    [['1', '71', '95']]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from towerlight.model.bundle import ModelBundle, load_bundle
from towerlight.recommend.filters import EMPTY_ROWS, Exclusions
from towerlight.recommend.service import UserSignals, user_context, wanted_strategies
from towerlight.recommend.strategies import BestAvailable, HybridWeights, resolve, scorer_for
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.evaluate import Recommend
from towerlight_offline.pipeline import FittedModels, TrainConfig, _Prepared, _Stages, _write_artifacts, _write_ranker
from towerlight_offline.ranker import first_event_times, user_histories_with_times

SERVED_STRATEGIES = ("content", "hybrid")
"""The strategies only serving implements; the others have offline rows of their own."""


def evaluation_bundle(
    fitted: FittedModels, prepared: _Prepared, dataset: Dataset, config: TrainConfig, out: Path, stages: _Stages
) -> ModelBundle:
    """The version a train-split run would publish (written to ``out``, from train events only), loaded."""
    train_only = replace(prepared, positives=prepared.split.train)
    files, sections = _write_artifacts(fitted.trained, train_only, dataset, config, out, stages)
    if fitted.ranker is not None:
        files.update(_write_ranker(fitted.trained, train_only, fitted.ranker, config, out))
    manifest = {
        "version": "evaluation",
        "files": {name: {} for name in files},
        "params": {"index": {"ef": sections["index"]["ef_search"]}},
    }
    return load_bundle(out, manifest)


@dataclass(frozen=True)
class ServedUser:
    """A test user as serving would read them at the time of their first held-out event."""

    signals: UserSignals
    seen: np.ndarray  # sorted catalogue rows of every training item (what the protocol excludes)
    now: float


def served_users(prepared: _Prepared, bundle: ModelBundle, lookback: int = 200) -> dict[str, ServedUser]:
    """Every user with training events, as ``towerlight.recommend.service`` reads them (newest first).

    The history is cut to ``lookback`` events like the service's query; the seen items are all of them.
    """
    histories = user_histories_with_times(prepared.split.train, bundle.catalogue.item_ids.tolist())
    returns = first_event_times(prepared.split.test)
    ids = bundle.catalogue.item_ids
    return {
        user: ServedUser(
            UserSignals(
                tuple(ids[history.rows[:lookback]].tolist()),
                attributes=prepared.attributes.get(user),
                times=tuple(history.times[:lookback].tolist()),
            ),
            np.unique(history.rows),
            returns.get(user, float(history.times[0]) if len(history.times) else 0.0),
        )
        for user, history in histories.items()
    }


def served_recommender(
    bundle: ModelBundle,
    strategy: str,
    weights: HybridWeights,
    users: Mapping[str, ServedUser],
    candidates: int = 200,
) -> Recommend:
    """``recommend(user_ids, k)`` through the serving scorers of ``strategy`` (``BestAvailable`` fallback)."""
    wanted = wanted_strategies(strategy, weights)
    policy = BestAvailable()

    def recommend(user_ids: list[str], k: int) -> list[list[str]]:
        out = []
        for user_id in user_ids:
            user = users[user_id]
            context = user_context(bundle, user.signals, strategy, wanted, now=user.now)
            choice = resolve(strategy, context, weights, policy)
            rows = scorer_for(context, choice.strategy, weights, candidates).candidates(
                Exclusions(banned=user.seen, inactive=EMPTY_ROWS), k
            )
            out.append(bundle.catalogue.item_ids[rows].tolist())
        return out

    return recommend
