"""Head to head: the current version and the new model scored on the same events, which neither trained on.

The gate's fair comparison. A new model's metrics come from this run's test split, while the current
version's recorded metrics came from its own run, on older data: two numbers that measure different
things. Here the current version's serving files are downloaded and verified, and its ONNX user tower
(on each user's history), item vectors, ranker and ranking tables go through the same evaluation code
as the new model (exact inner products, then the ranker's re-scoring), on this run's test events that
happened after the end of the current version's data window. The current version never
saw those events and the new model's train split does not hold them, so both models are evaluated on
the same users with the same protocol (DESIGN.md section 5), each over its own catalogue: an item the
current version does not know is one it cannot recommend.

When fewer than ``min_users`` test users have such events (a retrain on the same window, or a window
that did not move), there is nothing fair to compare on and the gate falls back to the recorded
metrics, saying so.

Example::

    >>> duel = head_to_head(store, current_manifest, prepared_split, new_recommend, attributes, work_dir)
    >>> duel.users, duel.new["ndcg@10"], duel.current["ndcg@10"]
    (512, 0.2412, 0.2187)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from towerlight import artifacts
from towerlight.errors import ArtifactError
from towerlight.model.bundle import ModelBundle, load_bundle
from towerlight.store import ArtifactStore
from towerlight.store.versions import download_version
from towerlight_offline.evaluate import (
    EvaluationSet,
    InteractionMatrix,
    Recommend,
    evaluate_recommender,
    scoring_recommender,
)
from towerlight_offline.ranker import first_event_times, reranking_recommender, user_histories_with_times
from towerlight_offline.split import Split, user_histories

logger = logging.getLogger(__name__)

MIN_USERS = 20  # fewer test users with events after the current window: no fair comparison
LEGACY_CANDIDATES = 200  # what versions re-ranked before their manifest recorded params.ranker.candidates


@dataclass(frozen=True)
class HeadToHead:
    """Both models' rows of the metrics table on the same later events."""

    current_version: str
    after: str  # the end of the current version's data window (ISO 8601)
    users: int
    new: dict[str, Any]
    current: dict[str, Any]

    def compared(self) -> tuple[dict[str, Any], dict[str, Any], str]:
        """What ``gate.decide`` takes as ``same_events``."""
        return self.new, self.current, f"the same {self.users} users' events after {self.after}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def window_end(manifest: Mapping[str, Any]) -> tuple[str, float] | None:
    """The last event time a version trained on, from its manifest's data window: as written, and in epoch seconds.

    >>> window_end({"data": {"window": {"end": "1998-04-22T23:10:38Z"}}})
    ('1998-04-22T23:10:38Z', 893286638.0)
    """
    end = ((manifest.get("data") or {}).get("window") or {}).get("end")
    try:
        return (str(end), datetime.fromisoformat(str(end).replace("Z", "+00:00")).timestamp()) if end else None
    except ValueError:
        return None


def later_events(split: Split, after: float, catalogue_size: int, max_users: int | None, seed: int) -> EvaluationSet:
    """The evaluation set of the test events strictly after ``after`` (training history unchanged)."""
    later = split.test[split.test["timestamp"].astype(float) > after]
    return EvaluationSet.from_split(
        Split(split.train, later), catalogue_size=catalogue_size, max_users=max_users, seed=seed
    )


def bundle_recommender(
    bundle: ModelBundle, train: pd.DataFrame, test: pd.DataFrame, attributes: Mapping[str, Mapping[str, Any]]
) -> Recommend:
    """``recommend(user_ids, k)`` of a loaded version: its user tower on ``train`` histories, then its ranker.

    Scores are exact inner products with the version's item vectors (serving's hnswlib approximates
    them); the ranker sees each user at the time of their first ``test`` event, as offline evaluation does.
    """
    tower = bundle.two_tower
    if tower is None:
        raise ArtifactError(f"version {bundle.version!r} has no two-tower model to compare")
    catalogue = [str(item) for item in bundle.catalogue.item_ids]
    matrix = InteractionMatrix.build(train, catalogue)
    histories = user_histories(train)
    items = np.asarray(tower.embeddings, dtype=np.float32)

    def score(rows: np.ndarray) -> np.ndarray:
        users = matrix.user_ids[rows]
        vectors = np.stack([tower.user_vector(histories[u], attributes.get(u)) for u in users])
        return vectors @ items.T

    if bundle.ranking is None:
        return scoring_recommender(score, matrix)
    size = int(((bundle.manifest.get("params") or {}).get("ranker") or {}).get("candidates") or LEGACY_CANDIDATES)
    return reranking_recommender(
        score,
        matrix,
        bundle.ranking.tables,
        user_histories_with_times(train, catalogue),
        first_event_times(test),
        bundle.ranking.ranker,
        size,
    )


def head_to_head(
    store: ArtifactStore,
    current_manifest: Mapping[str, Any],
    split: Split,
    new: Recommend,
    attributes: Mapping[str, Mapping[str, Any]],
    work_dir: Path,
    *,
    catalogue_size: int,
    k_values: tuple[int, ...] = (10, 50),
    max_users: int | None = None,
    min_users: int = MIN_USERS,
    seed: int = 0,
) -> tuple[HeadToHead | None, str]:
    """Evaluate ``new`` and the current version on the test events after the current window.

    Returns the result, or None and the reason there is nothing fair to compare on (no window in the
    manifest, too few later users, or a current version that cannot be loaded).
    """
    version = str(current_manifest.get("version"))
    end = window_end(current_manifest)
    if end is None:
        return None, f"current version {version} records no data window"
    since, after = end
    evaluation = later_events(split, after, catalogue_size, max_users, seed)
    if len(evaluation.user_ids) < min_users:
        return None, f"{len(evaluation.user_ids)} test users with events after {since} (fewer than {min_users})"
    try:
        model_dir, manifest = download_version(
            store, version, work_dir, only=artifacts.SERVING_FILES, optional=artifacts.OPTIONAL_SERVING_FILES
        )
        current = bundle_recommender(load_bundle(model_dir, manifest), split.train, split.test, attributes)
    except ArtifactError as exc:
        logger.warning("the current version %s cannot be re-evaluated: %s", version, exc)
        return None, f"current version {version} cannot be loaded: {exc}"
    rows = {
        name: evaluate_recommender(name, recommend, evaluation, k_values)
        for name, recommend in (("new", new), ("current", current))
    }
    return HeadToHead(version, since, len(evaluation.user_ids), rows["new"], rows["current"]), "same events"
