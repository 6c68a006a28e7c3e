"""The second stage at serving time: re-score two-tower candidates with the published ranker.

A version with ``ranker.json`` and ``ranker_tables.npz`` loads as a ``RankingModel`` beside its two-tower
model (``bundle.ranking``); versions without them serve the two-tower order. Features come from
``towerlight.ranking.features``, the module the offline job trained on.

Example::

    >>> ranking = load_ranking(model_dir, catalogue_size=1682)
    >>> scores, x = ranking.rescore(UserHistory(rows, times), time.time(), candidate_rows, tower_scores)
    >>> ranking.contributions(x).shape == x.shape
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from towerlight import artifacts
from towerlight.errors import ArtifactError
from towerlight.ranking.features import FEATURE_NAMES, RankingTables, UserHistory, candidate_features
from towerlight.ranking.model import Ranker, ranker_from_json

__all__ = ["RankingModel", "UserHistory", "load_ranking"]


@dataclass(frozen=True, eq=False)
class RankingModel:
    """The published ranker and the tables its features read."""

    ranker: Ranker
    tables: RankingTables

    def rescore(
        self, history: UserHistory, now: float, rows: np.ndarray, tower_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ranker scores of candidate ``rows`` (higher is better) and their feature matrix."""
        x = candidate_features(self.tables, history, now, rows, tower_scores)
        return self.ranker.score(x), x

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each feature's contribution to each row's score (``x`` as ``rescore`` returned it)."""
        return self.ranker.contributions(x)


def load_ranking(model_dir: Path, catalogue_size: int) -> RankingModel:
    """The ranker of a verified local copy of a version; ``ArtifactError`` when it cannot be served."""
    try:
        ranker = ranker_from_json(json.loads((model_dir / artifacts.RANKER).read_bytes()))
        with np.load(model_dir / artifacts.RANKER_TABLES, allow_pickle=False) as data:
            tables = RankingTables.from_arrays({name: data[name] for name in data.files})
    except (OSError, ValueError, EOFError) as exc:
        raise ArtifactError(f"the ranker of {model_dir.name!r} is unusable: {exc}", {"file": artifacts.RANKER}) from exc
    if ranker.features != FEATURE_NAMES:
        raise ArtifactError(
            f"the ranker of {model_dir.name!r} expects features {list(ranker.features)}, serving computes "
            f"{list(FEATURE_NAMES)}",
            {"file": artifacts.RANKER},
        )
    if tables.size != catalogue_size:
        raise ArtifactError(
            f"ranker tables of {model_dir.name!r} cover {tables.size} items, the catalogue {catalogue_size}",
            {"file": artifacts.RANKER_TABLES},
        )
    return RankingModel(ranker, tables)
