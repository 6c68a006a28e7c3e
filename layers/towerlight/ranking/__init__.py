"""The second stage at serving time: re-score two-tower candidates with the published ranker.

A version with ``ranker.json`` and ``ranker_tables.npz`` loads as a ``RankingModel`` beside its two-tower
model (``bundle.ranking``); versions without them serve the two-tower order. Features come from
``towerlight.ranking.features``, the module the offline job trained on.

Trees also come as ``ranker.onnx`` (the same trees, written by the offline job): onnxruntime scores 100
candidates in about a third of the time of the numpy walk, which stays for explanations (per-feature
contributions) and for versions without the file. Loading checks that both agree on probe rows.

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
from typing import TYPE_CHECKING

import numpy as np

from towerlight import artifacts
from towerlight.errors import ArtifactError
from towerlight.ranking.features import FEATURE_NAMES, RankingTables, UserHistory, candidate_features
from towerlight.ranking.model import (
    COMPILED_INPUT,
    COMPILED_TOLERANCE,
    Ranker,
    TreeRanker,
    probe_rows,
    ranker_from_json,
)

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["RankingModel", "UserHistory", "compiled_ranker", "load_ranking"]


@dataclass(frozen=True, eq=False)
class RankingModel:
    """The published ranker and the tables its features read."""

    ranker: Ranker
    tables: RankingTables
    compiled: ort.InferenceSession | None = None  # ranker.onnx: the same trees, scored by onnxruntime

    def rescore(
        self, history: UserHistory, now: float, rows: np.ndarray, tower_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ranker scores of candidate ``rows`` (higher is better) and their feature matrix."""
        x = candidate_features(self.tables, history, now, rows, tower_scores)
        return self.score(x), x

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores (float64) of feature rows ``x`` (float32, as ``candidate_features`` returns them)."""
        if self.compiled is None or not len(x):
            return self.ranker.score(x)
        return self.compiled.run(None, {COMPILED_INPUT: x})[0][:, 0].astype(np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each feature's contribution to each row's score (``x`` as ``rescore`` returned it)."""
        return self.ranker.contributions(x)


def load_ranking(model_dir: Path, catalogue_size: int, *, compiled: bool = False) -> RankingModel:
    """The ranker of a verified local copy of a version; ``ArtifactError`` when it cannot be served.

    ``compiled``: the version lists ``ranker.onnx`` (a file the manifest does not list was never verified).
    """
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
    session = None
    if compiled and isinstance(ranker, TreeRanker):
        session = compiled_ranker(model_dir / artifacts.RANKER_ONNX, ranker)
    return RankingModel(ranker, tables, session)


def compiled_ranker(path: Path, ranker: TreeRanker, probes: int = 32) -> ort.InferenceSession:
    """The onnxruntime session of ``ranker.onnx``; ``ArtifactError`` unless it scores ``probes`` rows on and
    beside the split thresholds (``probe_rows``) as ``ranker`` does. The offline job checks more rows."""
    from towerlight.model.sessions import onnx_session

    session = onnx_session(path)
    x = probe_rows(ranker, probes)
    try:
        scores = session.run(None, {COMPILED_INPUT: x})[0][:, 0]
    except Exception as exc:  # onnxruntime's own exception types: a graph that does not take the features
        raise ArtifactError(f"{path.name} cannot score the ranker's features: {exc}", {"file": path.name}) from exc
    gap = float(np.max(np.abs(scores - ranker.score(x))))
    if not gap <= COMPILED_TOLERANCE:
        raise ArtifactError(
            f"{path.name} and {artifacts.RANKER} disagree by {gap:.2g} on probe rows", {"file": path.name}
        )
    return session
