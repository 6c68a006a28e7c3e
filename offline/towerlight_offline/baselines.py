"""Baselines evaluated beside the two-tower model on the same split: popularity, item-kNN, implicit ALS.

Each baseline is fitted on an ``InteractionMatrix`` (users × catalogue training counts) and scores the
whole catalogue for a batch of matrix rows; ``evaluate.scoring_recommender`` does the rest (exclusion of
training items, top-k), so every model goes through the same ranking code.

Example::

    >>> matrix = InteractionMatrix.build(split.train, catalogue)
    >>> for model in build_baselines(BaselineParams(), seed=0):
    ...     model.fit(matrix)
    ...     evaluate_recommender(model.name, scoring_recommender(model.score, matrix), split)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from towerlight_offline.evaluate import InteractionMatrix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineParams:
    """Defaults that are reasonable on MovieLens-100K; tuning happens on ``split.validation_split``."""

    knn_neighbours: int = 200
    als_factors: int = 64
    als_regularization: float = 10.0
    als_iterations: int = 15
    als_alpha: float = 1.0
    threads: int = 2


class Baseline(Protocol):
    name: str

    def fit(self, matrix: InteractionMatrix) -> Baseline: ...

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Scores ``[len(rows), n_items]`` (a fresh float32 array) for rows of the fitted matrix."""
        ...


class PopularityBaseline:
    """Every user gets the items with the most training events.

    >>> PopularityBaseline().fit(matrix).score(np.array([0, 1])).shape
    (2, 1682)
    """

    name = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)

    def fit(self, matrix: InteractionMatrix) -> PopularityBaseline:
        self.counts = np.asarray(matrix.matrix.sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.tile(self.counts, (len(rows), 1))


def _keep_top_per_row(block: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The k largest stored values of each row of a CSR block (vectorised: one lexsort for the block)."""
    block.sum_duplicates()
    row_of = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
    order = np.lexsort((-block.data, row_of))
    rank = np.arange(len(order)) - block.indptr[row_of[order]]
    keep = order[rank < k]
    return sp.csr_matrix((block.data[keep], (row_of[keep], block.indices[keep])), shape=block.shape)


def item_cosine_neighbours(
    binary: sp.csr_matrix, neighbours: int, *, block_items: int = 2048, progress: bool = False
) -> sp.csr_matrix:
    """Item × item cosine similarities of a binary users × items matrix, top ``neighbours`` per row.

    Computed a block of items at a time so memory stays bounded on large catalogues; the diagonal
    (an item's similarity with itself) is dropped.

    >>> item_cosine_neighbours(sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1]])), 1).toarray().round(2)
    array([[0.  , 1.  , 0.  ],
           [1.  , 0.  , 0.  ],
           [0.71, 0.  , 0.  ]])
    """
    n_items = binary.shape[1]
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0), dtype=np.float64)).ravel()
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    normalised = (binary @ sp.diags(inverse.astype(np.float32))).tocsr()
    item_rows = normalised.T.tocsr()
    blocks = []
    starts = range(0, n_items, block_items)
    for start in tqdm(starts, desc="item-kNN similarities", unit="block", disable=not progress, leave=False):
        stop = min(start + block_items, n_items)
        block = (item_rows[start:stop] @ normalised).tocsr()
        block.setdiag(0.0, k=start)
        block.eliminate_zeros()
        blocks.append(_keep_top_per_row(block, neighbours))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), dtype=np.float32)


class ItemKNNBaseline:
    """Item-based kNN: a user's score for item j is the sum of j's cosine similarity to their items."""

    name = "item_knn"

    def __init__(self, neighbours: int = 200, progress: bool = False) -> None:
        self.neighbours = neighbours
        self.progress = progress
        self.similarity: sp.csr_matrix | None = None
        self.user_items: sp.csr_matrix | None = None

    def fit(self, matrix: InteractionMatrix) -> ItemKNNBaseline:
        self.user_items = matrix.binary()
        self.similarity = item_cosine_neighbours(self.user_items, self.neighbours, progress=self.progress)
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        if self.similarity is None or self.user_items is None:
            raise RuntimeError("fit the model before scoring")
        return (self.user_items[rows] @ self.similarity).toarray().astype(np.float32, copy=False)


class ALSBaseline:
    """Implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008) from the ``implicit`` package.

    Confidence of an observed (user, item) is ``alpha × count`` (implicit's scaling), unobserved is 1.
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 10.0,
        iterations: int = 15,
        alpha: float = 1.0,
        *,
        threads: int = 2,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.params = {
            "factors": factors,
            "regularization": regularization,
            "alpha": alpha,
            "iterations": iterations,
            "num_threads": threads,
            "random_state": seed,
        }
        self.progress = progress
        self.user_factors = np.zeros((0, factors), dtype=np.float32)
        self.item_factors = np.zeros((0, factors), dtype=np.float32)

    def fit(self, matrix: InteractionMatrix) -> ALSBaseline:
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit warns (and slows down) when BLAS runs its own threads inside its parallel loops
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(**self.params)
            model.fit(matrix.matrix.astype(np.float32), show_progress=self.progress)
        self.user_factors, self.item_factors = model.user_factors, model.item_factors
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T


def build_baselines(params: BaselineParams, *, seed: int = 0, progress: bool = False) -> list[Baseline]:
    """Unfitted popularity, item-kNN and ALS baselines, in that order.

    >>> [b.name for b in build_baselines(BaselineParams())]
    ['popularity', 'item_knn', 'als']
    """
    return [
        PopularityBaseline(),
        ItemKNNBaseline(params.knn_neighbours, progress=progress),
        ALSBaseline(
            params.als_factors,
            params.als_regularization,
            params.als_iterations,
            params.als_alpha,
            threads=params.threads,
            seed=seed,
            progress=progress,
        ),
    ]
