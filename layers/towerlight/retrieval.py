"""Nearest-neighbour retrieval by inner product: exact (the yardstick and fallback) and hnswlib.

Both retrievers share one contract, ``search(queries [B, D], k, *, exclude) -> (labels, scores)``:
``labels`` are int64 row numbers of the embedding matrix (= hnsw labels = rows of ``items.npz``), best first,
``scores`` the float32 inner products. ``k`` is cut to the number of items; a row that runs out of items
because of its exclusions is padded with label ``-1`` and score ``-inf``.

Example::

    >>> emb = np.eye(3, dtype=np.float32)
    >>> labels, scores = ExactRetriever(emb).search(np.array([[0.0, 1.0, 0.5]]), 2, exclude=[{1}])
    >>> labels.tolist(), scores.tolist()
    ([[2, 0]], [[0.5, 0.0]])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

# Bound the [chunk, N] score matrix of exact search to ~64 MB whatever the catalogue size.
_EXACT_CHUNK_FLOATS = 16_000_000


class Retriever(Protocol):
    """What serving needs from a retriever; ``ExactRetriever`` and ``HnswRetriever`` both provide it."""

    size: int
    dim: int

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape [B, {dim}], got {np.shape(queries)}")
    return np.ascontiguousarray(q)


def _check_exclude(exclude: Sequence[set[int]] | None, batch: int) -> None:
    if exclude is not None and len(exclude) != batch:
        raise ValueError(f"exclude has {len(exclude)} sets for {batch} queries")


def _prepare(
    queries: np.ndarray, k: int, exclude: Sequence[set[int]] | None, dim: int, size: int
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Checked queries, k clamped to the catalogue, and the result arrays pre-filled with "nothing found"."""
    q = _as_queries(queries, dim)
    _check_exclude(exclude, len(q))
    k = max(0, min(int(k), size))
    return q, k, np.full((len(q), k), -1, dtype=np.int64), np.full((len(q), k), -np.inf, dtype=np.float32)


class ExactRetriever:
    """Brute-force top-k by inner product over all rows of ``embeddings`` [N, D].

    Example::

        >>> r = ExactRetriever(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
        >>> r.search(np.array([[0.2, 0.9]]), k=5)[0].tolist()
        [[1, 0]]
    """

    def __init__(self, embeddings: np.ndarray) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be 2-D [N, D], got shape {emb.shape}")
        self.embeddings = np.ascontiguousarray(emb)
        self.size, self.dim = emb.shape

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query, best first; see the module docstring for the contract."""
        q, k, labels, scores = _prepare(queries, k, exclude, self.dim, self.size)
        if k == 0 or len(q) == 0:
            return labels, scores
        chunk = max(1, _EXACT_CHUNK_FLOATS // max(self.size, 1))
        for start in range(0, len(q), chunk):
            block = q[start : start + chunk] @ self.embeddings.T
            if exclude is not None:
                for row, banned in enumerate(exclude[start : start + chunk]):
                    banned_rows = [i for i in banned if 0 <= i < self.size]
                    if banned_rows:
                        block[row, banned_rows] = -np.inf
            if k < self.size:
                top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(self.size), block.shape).copy()
            top_scores = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            found = np.isfinite(top_scores)
            labels[start : start + chunk] = np.where(found, top, -1)
            scores[start : start + chunk] = np.where(found, top_scores, -np.inf)
        return labels, scores


class HnswRetriever:
    """Approximate top-k with an hnswlib index (space ``"ip"``, labels = embedding rows).

    Example::

        >>> retriever = HnswRetriever.load("items.hnsw", dim=64, n=1682, ef=100)  # doctest: +SKIP
        >>> labels, scores = retriever.search(user_vectors, 100, exclude=[seen_rows])  # doctest: +SKIP
    """

    def __init__(self, index: object, dim: int, n: int, ef: int) -> None:
        self.index = index
        self.dim = int(dim)
        self.size = int(n)
        self.ef = int(ef)

    @classmethod
    def load(cls, path: str | Path, dim: int, n: int, ef: int) -> HnswRetriever:
        """Load an index file written by ``towerlight_offline.index.build_index``."""
        import hnswlib  # imported here so that importing this module stays cheap

        index = hnswlib.Index(space="ip", dim=int(dim))
        index.load_index(str(path), max_elements=int(n))
        if index.get_current_count() != n:
            raise ValueError(f"index at {path} holds {index.get_current_count()} items, expected {n}")
        index.set_ef(int(ef))
        index.set_num_threads(1)  # one request at a time per Lambda instance
        return cls(index, dim, n, ef)

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query, best first; over-fetches by the exclusion size, then filters."""
        q, k, labels, scores = _prepare(queries, k, exclude, self.dim, self.size)
        if k == 0 or len(q) == 0:
            return labels, scores
        extra = max((len(s) for s in exclude), default=0) if exclude is not None else 0
        fetch = min(k + extra, self.size)
        self.index.set_ef(max(self.ef, fetch))  # hnswlib cannot return more than ef results
        try:
            raw_labels, distances = self.index.knn_query(q, k=fetch)
        finally:
            self.index.set_ef(self.ef)
        raw_labels = raw_labels.astype(np.int64)
        raw_scores = (1.0 - distances).astype(np.float32)  # hnswlib "ip" distance is 1 - <q, x>
        for row in range(len(q)):
            row_labels, row_scores = raw_labels[row], raw_scores[row]
            if exclude is not None and exclude[row]:
                keep = ~np.isin(row_labels, np.fromiter(exclude[row], dtype=np.int64))
                row_labels, row_scores = row_labels[keep], row_scores[keep]
            found = min(k, len(row_labels))
            labels[row, :found] = row_labels[:found]
            scores[row, :found] = row_scores[:found]
        return labels, scores


def recall_at_k(approx_labels: np.ndarray, exact_labels: np.ndarray) -> float:
    """Mean share of each row's exact neighbours that the approximate search also found (``-1`` ignored).

    Example::

        >>> recall_at_k(np.array([[1, 2, 9]]), np.array([[1, 2, 3]]))
        0.6666666666666666
    """
    approx = np.asarray(approx_labels)
    exact = np.asarray(exact_labels)
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"row counts differ: {approx.shape[0]} vs {exact.shape[0]}")
    recalls = []
    for found, truth in zip(approx, exact, strict=True):
        truth_set = set(truth[truth >= 0].tolist())
        if truth_set:
            recalls.append(len(truth_set.intersection(found[found >= 0].tolist())) / len(truth_set))
    return float(np.mean(recalls)) if recalls else 1.0
