"""Offline evaluation: ranking metrics as plain functions, and one runner shared by every model.

Protocol (DESIGN.md section 5): rank the full catalogue for each test user, excluding the items of that
user's training events, and compare the top k with the user's held-out items. A held-out item the user
already had in train cannot be recommended, so it is not counted as relevant; a user left with no
relevant item is not evaluated.

Every model is evaluated the same way: it provides ``score(user_rows) -> [B, N]`` over the catalogue and
``scoring_recommender`` turns that into the ``recommend(user_ids, k)`` callable the runner takes, with
the training items excluded by the one helper ``towerlight.retrieval.top_k_excluding``.

Example::

    >>> matrix = InteractionMatrix.build(split.train, catalogue)
    >>> recommend = scoring_recommender(lambda rows: np.tile(popularity, (len(rows), 1)), matrix)
    >>> evaluate_recommender("popularity", recommend, split)["ndcg@10"]  # MovieLens-100K
    0.1214
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from towerlight.retrieval import top_k_excluding
from towerlight_offline.split import Split

logger = logging.getLogger(__name__)

Recommend = Callable[[list[str], int], list[list[str]]]
"""``recommend(user_ids, k)``: the top-k item ids for each user, best first, training items excluded."""

Scorer = Callable[[np.ndarray], np.ndarray]
"""``score(user_rows)``: a fresh float32 array ``[len(user_rows), N]`` of scores over the catalogue."""

SCORE_BUDGET_BYTES = 256 * 1024 * 1024  # scores + argpartition indices of one scoring batch


# ---- metrics -------------------------------------------------------------------------------------
def recall_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items found in the top k.

    >>> recall_at_k(["a", "b", "c"], {"a", "z"}, k=2)
    0.5
    """
    if not relevant:
        return 0.0
    hits = sum(1 for item in recommended[:k] if item in relevant)
    return hits / len(relevant)


def ndcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-relevance NDCG: DCG of the top k over the ideal DCG of ``min(|relevant|, k)`` hits.

    >>> round(ndcg_at_k(["x", "a"], {"a"}, k=2), 4)  # one hit at rank 2: (1/log2(3)) / 1
    0.6309
    """
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(recommended[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal


def catalogue_coverage(recommendations: Iterable[Sequence[str]], catalogue_size: int, k: int | None = None) -> float:
    """Share of the catalogue that appears in at least one user's top k (whole lists when k is None).

    >>> catalogue_coverage([["a", "b"], ["a", "c"]], catalogue_size=4, k=1)
    0.25
    """
    if catalogue_size <= 0:
        return 0.0
    shown = {item for items in recommendations for item in items[:k]}
    return len(shown) / catalogue_size


# ---- the training interactions as a matrix -------------------------------------------------------
@dataclass
class InteractionMatrix:
    """Training events as a users × catalogue CSR matrix of event counts, with the id ↔ row maps.

    Columns follow ``item_ids`` (the catalogue order every model scores in); events on items outside the
    catalogue are dropped.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_rows: dict[str, int]

    @classmethod
    def build(cls, interactions: pd.DataFrame, item_ids: Sequence[str]) -> InteractionMatrix:
        """>>> InteractionMatrix.build(split.train, spec.item_ids.values).matrix.shape
        (943, 1682)
        """
        catalogue = pd.Index(np.asarray(item_ids, dtype=str))
        columns = catalogue.get_indexer(interactions["item_id"].astype(str))
        known = columns >= 0
        if not known.all():
            logger.warning("%d events on items outside the catalogue ignored", int((~known).sum()))
        user_codes, users = pd.factorize(interactions["user_id"].astype(str)[known], sort=True)
        matrix = sp.csr_matrix(
            (np.ones(len(user_codes), dtype=np.float32), (user_codes, columns[known])),
            shape=(len(users), len(catalogue)),
        )
        matrix.sum_duplicates()
        user_ids = np.asarray(users, dtype=str)
        return cls(matrix, user_ids, catalogue.to_numpy(dtype=str), {u: i for i, u in enumerate(user_ids)})

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    def rows(self, user_ids: Sequence[str]) -> np.ndarray:
        """Matrix rows of users (KeyError for a user without training events)."""
        return np.fromiter((self.user_rows[u] for u in user_ids), dtype=np.int64, count=len(user_ids))

    def seen(self, rows: np.ndarray) -> list[np.ndarray]:
        """Catalogue columns of each user's training items (what recommendations must exclude)."""
        indptr, indices = self.matrix.indptr, self.matrix.indices
        return [indices[indptr[r] : indptr[r + 1]] for r in rows]

    def binary(self) -> sp.csr_matrix:
        """The same matrix with every stored count set to 1."""
        out = self.matrix.copy()
        out.data[:] = 1.0
        return out


def scoring_batch_rows(n_items: int, budget_bytes: int = SCORE_BUDGET_BYTES) -> int:
    """How many users to score at once so a batch of scores and sort indices fits ``budget_bytes``."""
    return max(1, budget_bytes // (20 * max(n_items, 1)))  # float32 scores, int64 keys and indices


def scoring_recommender(score: Scorer, matrix: InteractionMatrix) -> Recommend:
    """A ``recommend(user_ids, k)`` from a catalogue scorer: batch, exclude training items, map to ids.

    >>> recommend = scoring_recommender(lambda rows: np.tile(counts, (len(rows), 1)), matrix)
    >>> recommend(["196"], 3)
    [['50', '100', '181']]
    """
    batch = scoring_batch_rows(matrix.n_items)

    def recommend(user_ids: list[str], k: int) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, len(user_ids), batch):
            rows = matrix.rows(user_ids[start : start + batch])
            scores = np.asarray(score(rows), dtype=np.float32)
            top = top_k_excluding(scores, matrix.seen(rows), k)
            out += [matrix.item_ids[r[r >= 0]].tolist() for r in top]
        return out

    return recommend


# ---- the evaluation runner -----------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationSet:
    """Test users (sorted, optionally sampled) and their relevant held-out items."""

    user_ids: list[str]
    relevant: list[frozenset[str]]
    catalogue_size: int

    @classmethod
    def from_split(
        cls,
        split: Split,
        *,
        catalogue_size: int | None = None,
        max_users: int | None = None,
        seed: int = 0,
    ) -> EvaluationSet:
        """Relevant = a user's test items not among their train items; ``max_users`` samples users (seeded).

        ``catalogue_size`` defaults to the number of distinct items in the split.
        """
        pairs = ["user_id", "item_id"]
        train = split.train[pairs].astype(str).drop_duplicates()
        test = split.test[pairs].astype(str).drop_duplicates()
        merged = test.merge(train, on=pairs, how="left", indicator=True)
        fresh = merged[merged["_merge"] == "left_only"]
        fresh = fresh[fresh["user_id"].isin(train["user_id"].unique())]
        grouped = fresh.groupby("user_id", sort=True)["item_id"].agg(frozenset)
        users = grouped.index.to_numpy(dtype=str)
        if max_users is not None and len(users) > max_users:
            chosen = np.sort(np.random.default_rng(seed).choice(len(users), size=max_users, replace=False))
            grouped = grouped.iloc[chosen]
        if catalogue_size is None:
            catalogue_size = int(pd.concat([train["item_id"], test["item_id"]]).nunique())
        return cls(grouped.index.tolist(), grouped.tolist(), catalogue_size)

    def batches(self, size: int) -> Iterator[tuple[list[str], list[frozenset[str]]]]:
        for start in range(0, len(self.user_ids), size):
            yield self.user_ids[start : start + size], self.relevant[start : start + size]


def evaluate_recommender(
    name: str,
    recommend: Recommend,
    split: Split | EvaluationSet,
    k_values: Sequence[int] = (10, 50),
    *,
    max_users: int | None = None,
    seed: int = 0,
    batch_users: int = 1024,
    progress: bool = False,
) -> dict[str, Any]:
    """Recall@k, NDCG@k and coverage@k for every k in ``k_values``, averaged over the test users.

    Pass an ``EvaluationSet`` to evaluate several models on exactly the same users (``max_users`` and
    ``seed`` are then ignored).

    >>> row = evaluate_recommender("popularity", recommend, split)
    >>> row["recall@10"], row["ndcg@10"], row["recall@50"], row["coverage@10"], row["users"]
    (0.0666, 0.1214, 0.2087, 0.0428, 943)
    """
    started = time.perf_counter()
    if isinstance(split, Split):
        split = EvaluationSet.from_split(split, max_users=max_users, seed=seed)
    depth = max(k_values)
    totals = {f"{metric}@{k}": 0.0 for k in k_values for metric in ("recall", "ndcg")}
    shown: dict[int, set[str]] = {k: set() for k in k_values}
    bar = tqdm(total=len(split.user_ids), desc=f"evaluate {name}", unit="user", disable=not progress, leave=False)
    with bar:
        for users, relevant in split.batches(batch_users):
            for items, rel in zip(recommend(users, depth), relevant, strict=True):
                for k in k_values:
                    totals[f"recall@{k}"] += recall_at_k(items, rel, k)
                    totals[f"ndcg@{k}"] += ndcg_at_k(items, rel, k)
                    shown[k].update(items[:k])
            bar.update(len(users))
    n_users = len(split.user_ids)
    row: dict[str, Any] = {"model": name, "users": n_users}
    row.update({key: value / n_users if n_users else 0.0 for key, value in totals.items()})
    row.update({f"coverage@{k}": catalogue_coverage([list(items)], split.catalogue_size) for k, items in shown.items()})
    row["seconds"] = round(time.perf_counter() - started, 3)
    logger.info("evaluated %s on %d users in %.1fs", name, n_users, row["seconds"])
    return row
