"""The second stage: a ranker that re-scores the two-tower candidates, trained with scikit-learn.

Time-aware labels: the last part of each user's training events (the validation split, same rule as the
test split) are the labels, and the features see only the events before them — the two-tower model that
proposes the candidates is trained on those earlier events too, so its scores are as uninformed about the
labels as they are about the test at evaluation time. Logistic regression and gradient-boosted trees are
fitted on most users and compared by NDCG@10 of the re-ranked candidates of the other users; the better
one is refitted on every user and published as JSON (``towerlight.ranking.model``), never a pickle.

Features come from ``towerlight.ranking.features.candidate_features``, the function serving calls.

Example::

    >>> tables = build_ranking_tables(validation.train, records, RankerParams())
    >>> examples = ranking_examples(tables, histories, now, candidates, relevant)
    >>> fitted = fit_ranker(examples, RankerParams())
    >>> fitted.chosen, fitted.validation
    ('trees', {'linear': 0.31, 'trees': 0.33})
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from towerlight import artifacts
from towerlight.config import DEFAULT_CANDIDATES
from towerlight.features import ItemRecord, stable_hash, title_words
from towerlight.ranking.features import FEATURE_NAMES, RankingTables, UserHistory, candidate_features
from towerlight.ranking.model import LinearRanker, Ranker, TreeRanker
from towerlight_offline.baselines import item_cosine_neighbours
from towerlight_offline.catalogue import category_codes, csr
from towerlight_offline.evaluate import EvaluationSet, InteractionMatrix, Recommend, Scorer, top_k_excluding
from towerlight_offline.ranker_onnx import write_ranker_onnx
from towerlight_offline.split import Split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerParams:
    """How candidates, tables and the two models are built; stored in the manifest."""

    candidates: int = DEFAULT_CANDIDATES  # two-tower top-C re-scored, as serving does by default
    neighbours: int = 50  # item-kNN neighbours kept per item in the published table
    trend_days: float = 30.0
    max_users: int | None = 20_000  # training users sampled (seeded) to bound the training set
    holdout_users: float = 0.2  # share of users the two models are compared on
    negative_share: float = 0.3  # share of negative candidates kept for fitting (all positives are kept)
    linear_c: float = 1.0
    # small trees: on MovieLens-100K 60 trees of depth 4 ranked as well as 150 of depth 6 (test NDCG@10
    # 0.280 vs 0.282) at a quarter of the per-request cost
    trees: int = 60
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    max_depth: int = 4
    tree_margin: float = 0.01  # trees must beat the linear model by this relative margin: it is cheaper
    seed: int = 0


# ---- tables -----------------------------------------------------------------------------------------
def build_ranking_tables(
    interactions: pd.DataFrame, records: Sequence[ItemRecord], params: RankerParams
) -> RankingTables:
    """Tables over the catalogue of ``records`` (row i = records[i]) from the events of the window.

    >>> build_ranking_tables(split.train, records, RankerParams()).popularity.shape
    (1682,)
    """
    catalogue = [r.item_id for r in records]
    matrix = InteractionMatrix.build(interactions, catalogue)
    similar = item_cosine_neighbours(matrix.binary(), params.neighbours)
    columns = pd.Index(catalogue).get_indexer(interactions["item_id"].astype(str))
    known = columns >= 0
    columns, times = columns[known], interactions["timestamp"].to_numpy(dtype=np.float64)[known]
    n = len(catalogue)
    now = times.max(initial=0.0)
    counts = np.bincount(columns, minlength=n).astype(np.float64)
    recent = np.bincount(columns[times >= now - params.trend_days * 86_400], minlength=n)
    span_days = max((now - times.min(initial=now)) / 86_400, params.trend_days)
    first_seen = np.full(n, np.nan)
    np.fmin.at(first_seen, columns, times)
    category = csr([sorted(set(codes)) for codes in category_codes(records)[1]])
    title = csr([sorted({stable_hash(w) % 2**31 for w in title_words(r.title)}) for r in records])
    return RankingTables(
        neighbour_offsets=similar.indptr.astype(np.int64),
        neighbour_rows=similar.indices.astype(np.int32),
        neighbour_scores=similar.data.astype(np.float32),
        popularity=np.log1p(counts).astype(np.float32),
        trend=(np.log1p(recent) - np.log1p(counts * params.trend_days / span_days)).astype(np.float32),
        first_seen=first_seen,
        category_offsets=category[0],
        category_codes=category[1],
        title_offsets=title[0],
        title_codes=title[1],
    )


def user_histories_with_times(interactions: pd.DataFrame, catalogue: Sequence[str]) -> dict[str, UserHistory]:
    """Every user's catalogue rows and times, most recent first (ties: the later input row first)."""
    columns = pd.Index(catalogue).get_indexer(interactions["item_id"].astype(str))
    frame = pd.DataFrame(
        {
            "user": interactions["user_id"].astype(str).to_numpy(),
            "row": columns,
            "time": interactions["timestamp"].to_numpy(dtype=np.float64),
            "order": np.arange(len(interactions)),
        }
    )
    frame = frame[frame["row"] >= 0].sort_values(["user", "time", "order"], ascending=[True, False, False])
    out: dict[str, UserHistory] = {}
    for user, group in frame.groupby("user", sort=False):
        out[str(user)] = UserHistory(group["row"].to_numpy(np.int64), group["time"].to_numpy(np.float64))
    return out


def first_event_times(interactions: pd.DataFrame) -> dict[str, float]:
    """When each user came back: the time of their first held-out event (the request time to simulate)."""
    return interactions.groupby(interactions["user_id"].astype(str))["timestamp"].min().astype(float).to_dict()


# ---- candidates and examples ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidates:
    """Each user's two-tower top-C rows (training items excluded) and their scores, best first."""

    user_ids: list[str]
    rows: np.ndarray  # int64 [U, C], -1 padding
    scores: np.ndarray  # float32 [U, C]


@dataclass
class Examples:
    """Feature rows of every (user, candidate) pair, their binary labels and the users' group sizes."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # int64 [U]: rows of user u are the next groups[u] rows
    user_ids: list[str] = field(default_factory=list)

    def subset(self, users: np.ndarray) -> Examples:
        starts = np.r_[0, np.cumsum(self.groups)[:-1]]
        index = np.concatenate([np.arange(starts[u], starts[u] + self.groups[u]) for u in users] or [[]]).astype(int)
        return Examples(self.x[index], self.y[index], self.groups[users], [self.user_ids[u] for u in users])


def features_of(
    tables: RankingTables,
    histories: Mapping[str, UserHistory],
    now: Mapping[str, float],
    candidates: Candidates,
) -> list[np.ndarray]:
    """The feature matrix of each user's candidates (padding dropped), exactly as serving computes it."""
    out = []
    for user, rows, scores in zip(candidates.user_ids, candidates.rows, candidates.scores, strict=True):
        keep = rows >= 0
        history = histories.get(user, UserHistory.empty())
        out.append(candidate_features(tables, history, now[user], rows[keep], scores[keep]))
    return out


def ranking_examples(
    tables: RankingTables,
    histories: Mapping[str, UserHistory],
    now: Mapping[str, float],
    candidates: Candidates,
    relevant: Mapping[str, frozenset[int]],
) -> Examples:
    """Labelled examples: a candidate is positive when it is among the user's next (held-out) rows."""
    features = features_of(tables, histories, now, candidates)
    labels = [
        np.isin(rows[rows >= 0], np.fromiter(relevant.get(u, ()), dtype=np.int64))
        for u, rows in zip(candidates.user_ids, candidates.rows, strict=True)
    ]
    return Examples(
        np.concatenate(features),
        np.concatenate(labels).astype(np.int8),
        np.asarray([len(f) for f in features], dtype=np.int64),
        list(candidates.user_ids),
    )


# ---- fitting and comparing -----------------------------------------------------------------------------
def reranked_ndcg(scores: np.ndarray, examples: Examples, relevant_counts: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k of each user's candidates ordered by ``scores``; relevant items that are not among
    the candidates count in the ideal DCG, as in the full evaluation.

    >>> reranked_ndcg(np.array([0.1, 0.9]), Examples(np.zeros((2, 1)), np.array([0, 1]), np.array([2])), np.array([1]))
    1.0
    """
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    total, start = 0.0, 0
    for size, n_relevant in zip(examples.groups, relevant_counts, strict=True):
        labels = examples.y[start : start + size]
        order = np.argsort(-scores[start : start + size], kind="stable")[:k]
        ideal = discount[: min(int(n_relevant), k)].sum()
        total += float(discount[: len(order)] @ labels[order]) / ideal if ideal else 0.0
        start += size
    return float(total / max(len(examples.groups), 1))


def fit_linear(examples: Examples, params: RankerParams) -> LinearRanker:
    from sklearn.linear_model import LogisticRegression

    mean, scale = examples.x.mean(axis=0), examples.x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    model = LogisticRegression(C=params.linear_c, max_iter=500)
    model.fit((examples.x - mean) / scale, examples.y)
    return LinearRanker(FEATURE_NAMES, mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def tree_ranker_from_sklearn(model: object, features: Sequence[str]) -> TreeRanker:
    """A fitted ``HistGradientBoostingClassifier``/``Regressor`` (numerical features) as flat numpy trees.

    Inner-node values become the count-weighted mean of their leaves (for path contributions).
    """
    predictors = [tree[0] for tree in model._predictors]  # scikit-learn keeps the fitted trees here
    parts, roots, offset, depth = [], [], 0, 0
    for predictor in predictors:
        nodes = predictor.nodes
        n = len(nodes)
        leaf = nodes["is_leaf"].astype(bool)
        value = nodes["value"].astype(np.float64).copy()
        count = nodes["count"].astype(np.float64)
        for i in np.argsort(-nodes["depth"], kind="stable"):  # deepest first: children before parents
            if not leaf[i]:
                left, right = nodes["left"][i], nodes["right"][i]
                weight = count[left] + count[right]
                value[i] = (value[left] * count[left] + value[right] * count[right]) / max(weight, 1.0)
        here = np.arange(n)
        parts.append(
            (
                np.where(leaf, -1, nodes["feature_idx"]).astype(np.int64),
                np.where(leaf, np.inf, nodes["num_threshold"]).astype(np.float64),
                nodes["missing_go_to_left"].astype(bool),
                np.where(leaf, here, nodes["left"]) + offset,
                np.where(leaf, here, nodes["right"]) + offset,
                value,
            )
        )
        roots.append(offset)
        offset += n
        depth = max(depth, int(nodes["depth"].max()))
    feature, threshold, missing, left, right, value = (np.concatenate(column) for column in zip(*parts, strict=True))
    baseline = float(np.ravel(model._baseline_prediction)[0])
    return TreeRanker(
        tuple(features),
        baseline,
        np.asarray(roots, dtype=np.int64),
        feature,
        threshold,
        missing,
        left,
        right,
        value,
        depth,
    )


def fit_trees(examples: Examples, params: RankerParams) -> TreeRanker:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=params.trees,
        learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes,
        max_depth=params.max_depth,
        early_stopping=False,
        random_state=params.seed,
    )
    model.fit(examples.x, examples.y)
    return tree_ranker_from_sklearn(model, FEATURE_NAMES)


@dataclass
class FittedRanker:
    ranker: Ranker
    chosen: str
    validation: dict[str, float]  # NDCG@10 of the re-ranked candidates of held-out users, per model
    examples: int
    positives: int

    def to_json(self) -> dict[str, object]:
        return {
            "chosen": self.chosen,
            "validation_ndcg@10": self.validation,
            "examples": self.examples,
            "positives": self.positives,
        }


FITTERS = {"linear": fit_linear, "trees": fit_trees}


def _thinned(examples: Examples, share: float, rng: np.random.Generator) -> Examples:
    """All positives and a random ``share`` of the negatives (fitting cost, not ranking quality)."""
    keep = (examples.y == 1) | (rng.random(len(examples.y)) < share)
    return Examples(examples.x[keep], examples.y[keep], np.asarray([int(keep.sum())]))


def fit_ranker(examples: Examples, relevant_counts: np.ndarray, params: RankerParams) -> FittedRanker:
    """Fit both models on most users, keep the better by NDCG@10 on the others, refit it on all users.

    Trees are kept only when they beat the linear model by ``params.tree_margin`` (relative): within
    that margin the linear model is as good, faster to serve and explains itself exactly.

    ``relevant_counts[u]``: how many relevant items user u has in all (found among the candidates or not).
    Fits run on one thread: scikit-learn's OpenMP loops slow down many times over on shared cores.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(params.seed)
    users = rng.permutation(len(examples.groups))
    n_hold = max(1, int(len(users) * params.holdout_users)) if len(users) > 1 else 0
    held, fit_users = np.sort(users[:n_hold]), np.sort(users[n_hold:])
    fit_part, held_part = examples.subset(fit_users), examples.subset(held)
    scores = {"two_tower_order": round(reranked_ndcg(held_part.x[:, 0], held_part, relevant_counts[held]), 4)}
    with threadpool_limits(limits=1):
        for name, fitter in FITTERS.items():
            model = fitter(_thinned(fit_part, params.negative_share, rng), params)
            scores[name] = round(reranked_ndcg(model.score(held_part.x), held_part, relevant_counts[held]), 4)
            logger.info("ranker %s: validation NDCG@10 %.4f", name, scores[name])
        chosen = "trees" if scores["trees"] > scores["linear"] * (1.0 + params.tree_margin) else "linear"
        ranker = FITTERS[chosen](_thinned(examples, params.negative_share, rng), params)
    return FittedRanker(ranker, chosen, scores, len(examples.y), int(examples.y.sum()))


def save_ranker(out: Path, ranker: Ranker, tables: RankingTables) -> dict[str, Path]:
    """Write ``ranker.json`` (plain JSON) and ``ranker_tables.npz`` into ``out``, and ``ranker.onnx`` for
    trees (``towerlight_offline.ranker_onnx``); the paths by file name."""
    (out / artifacts.RANKER).write_text(json.dumps(ranker.to_json()))
    np.savez(out / artifacts.RANKER_TABLES, **tables.to_arrays())
    paths = {name: out / name for name in (artifacts.RANKER, artifacts.RANKER_TABLES)}
    if isinstance(ranker, TreeRanker):
        paths[artifacts.RANKER_ONNX] = write_ranker_onnx(ranker, out)
    return paths


# ---- the two worlds: training the ranker on validation, evaluating it on test ---------------------------
def tower_recommend_candidates(score: Scorer, matrix: InteractionMatrix, user_ids: list[str], size: int) -> Candidates:
    """Two-tower top-``size`` of ``user_ids`` (training items excluded) from a catalogue scorer."""
    rows_out, scores_out = [], []
    for start in range(0, len(user_ids), 512):
        scores = np.asarray(score(matrix.rows(user_ids[start : start + 512])), dtype=np.float32)
        kept = scores.copy()
        top = top_k_excluding(kept, matrix.seen(matrix.rows(user_ids[start : start + 512])), size)
        rows_out.append(top)
        scores_out.append(np.where(top >= 0, np.take_along_axis(scores, np.maximum(top, 0), axis=1), -np.inf))
    return Candidates(user_ids, np.concatenate(rows_out), np.concatenate(scores_out).astype(np.float32))


def train_ranker(
    validation: Split,
    score: Scorer,
    records: Sequence[ItemRecord],
    params: RankerParams,
) -> FittedRanker:
    """Fit the ranker on the validation world: ``score`` is a two-tower scorer trained on
    ``validation.train`` (rows of its interaction matrix), labels are each user's ``validation.test`` items.
    """
    catalogue = [r.item_id for r in records]
    matrix = InteractionMatrix.build(validation.train, catalogue)
    users = EvaluationSet.from_split(
        validation, catalogue_size=len(catalogue), max_users=params.max_users, seed=params.seed
    )
    column = {item: i for i, item in enumerate(catalogue)}
    relevant = {u: frozenset(column[i] for i in r) for u, r in zip(users.user_ids, users.relevant, strict=True)}
    tables = build_ranking_tables(validation.train, records, params)
    candidates = tower_recommend_candidates(score, matrix, users.user_ids, params.candidates)
    histories = user_histories_with_times(validation.train, catalogue)
    examples = ranking_examples(tables, histories, first_event_times(validation.test), candidates, relevant)
    counts = np.asarray([len(relevant[u]) for u in users.user_ids], dtype=np.int64)
    return fit_ranker(examples, counts, params)


def reranking_recommender(
    score: Scorer,
    matrix: InteractionMatrix,
    tables: RankingTables,
    histories: Mapping[str, UserHistory],
    now: Mapping[str, float],
    ranker: Ranker,
    size: int,
) -> Recommend:
    """``recommend(user_ids, k)``: two-tower top-``size`` re-scored by ``ranker`` (k at most ``size``)."""

    def recommend(user_ids: list[str], k: int) -> list[list[str]]:
        candidates = tower_recommend_candidates(score, matrix, user_ids, max(size, k))
        out = []
        for x, rows in zip(features_of(tables, histories, now, candidates), candidates.rows, strict=True):
            rows = rows[rows >= 0]
            order = np.argsort(-ranker.score(x), kind="stable")[:k]
            out.append(matrix.item_ids[rows[order]].tolist())
        return out

    return recommend
