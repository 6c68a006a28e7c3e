"""Nearest-neighbour retrieval by inner product: exact (the yardstick and fallback) and hnswlib.

Both retrievers share one contract, ``search(queries [B, D], k, *, exclude) -> (labels, scores)``:
``labels`` are int64 row numbers of the embedding matrix (= catalogue rows), best first, ``scores`` the
float32 inner products. ``k`` is cut to the number of items; a row that runs out of items because of its
exclusions is padded with label ``-1`` and score ``-inf``.

The hnswlib index holds each distinct item vector once (``LabelGroups`` maps an index label back to the
rows that share the vector: hnswlib's graph falls apart on many exact copies). It may hold them minus a
``center`` vector: ``q . (x - c) = q . x - q . c`` ranks items exactly as ``q . x`` does. The offline build
(``towerlight_offline.index``) centres only when the vectors as they are miss its recall gate, since the
uncentred graph of unit-norm tower vectors is both faster and more accurate when it passes; a zero
``center`` means none.

Example::

    >>> emb = np.eye(3, dtype=np.float32)
    >>> labels, scores = ExactRetriever(emb).search(np.array([[0.0, 1.0, 0.5]]), 2, exclude=[{1}])
    >>> labels.tolist(), scores.tolist()
    ([[2, 0]], [[0.5, 0.0]])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

# Bound the [chunk, N] score matrix of exact search to ~64 MB (its ranking keys to ~128 MB) whatever the catalogue size.
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


def inner_products(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``vectors @ query`` [N], each row's value the same whatever rows surround it.

    BLAS's matrix-vector product rounds by block, so a row's score could move by one float32 step with
    the batch it came in (measured: 296 of 300 random batches differed from their rows scored alone).
    einsum's loop takes each row on its own, for about 2 µs more per 100 rows: a page, ``/rank`` and the
    ranker's features then agree on every score.

    >>> inner_products(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), np.array([1.0, 1.0], dtype=np.float32))
    array([3., 7.], dtype=float32)
    """
    return np.einsum("ij,j->i", vectors, query)


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


def _ranking_keys(scores: np.ndarray) -> np.ndarray:
    """int64 keys ordered like the float32 scores, ties broken by the lower column, all distinct.

    Partitioning distinct keys stays fast when a row is mostly ties (item-kNN rows are mostly zeros,
    where introselect on the raw scores degrades about tenfold) and makes the top k deterministic.
    """
    keys = scores.view(np.int32).astype(np.int64)
    np.bitwise_xor(keys, 0x7FFFFFFF, out=keys, where=keys < 0)  # negative floats: reverse their order
    keys <<= 32
    keys |= np.arange(scores.shape[1] - 1, -1, -1, dtype=np.int64)
    return keys


def top_k_excluding(scores: np.ndarray, exclude_rows: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Column indices of the k best scores of each row, best first, never an excluded column.

    Equal scores rank the lower column first. A float32 ``scores`` is modified in place (excluded and NaN
    entries become ``-inf``) to avoid copying a large batch. A row with fewer than k allowed columns is
    padded with ``-1``.

    >>> top_k_excluding(np.array([[0.1, 0.9, 0.5, 0.7]]), [np.array([1])], k=3).tolist()
    [[3, 2, 0]]
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or len(exclude_rows) != scores.shape[0]:
        raise ValueError("scores must be [B, N] with one exclusion array per row")
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k <= 0:
        return np.empty((n_rows, 0), dtype=np.int64)
    scores[np.isnan(scores)] = -np.inf
    lengths = np.fromiter((len(r) for r in exclude_rows), dtype=np.int64, count=n_rows)
    if lengths.sum():
        columns = np.concatenate([np.asarray(r, dtype=np.int64) for r in exclude_rows])
        scores[np.repeat(np.arange(n_rows), lengths), columns] = -np.inf
    keys = _ranking_keys(scores)
    candidates = np.argpartition(keys, n_items - k, axis=1)[:, n_items - k :]
    order = np.argsort(np.take_along_axis(keys, candidates, axis=1), axis=1)[:, ::-1]
    top = np.take_along_axis(candidates, order, axis=1)
    top[np.take_along_axis(scores, top, axis=1) == -np.inf] = -1
    return top


class ExactRetriever:
    """Brute-force top-k by inner product over all rows of ``embeddings`` [N, D]; equal scores: lower row first.

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
            banned = [
                np.fromiter((i for i in rows if 0 <= i < self.size), dtype=np.int64)
                for rows in (exclude[start : start + chunk] if exclude is not None else [()] * len(block))
            ]
            top = top_k_excluding(block, banned, k)
            labels[start : start + chunk] = top
            scores[start : start + chunk] = np.where(
                top >= 0, np.take_along_axis(block, np.maximum(top, 0), axis=1), -np.inf
            )
        return labels, scores


@dataclass(frozen=True, eq=False)
class LabelGroups:
    """Index label -> the embedding rows it stands for (rows with one identical vector share one label).

    ``label_of_row`` int64 [N]; the rows of label ``g``, ascending, are ``members[offsets[g]:offsets[g + 1]]``.

    Example::

        >>> groups = LabelGroups.from_labels(np.array([0, 1, 0, 2]))
        >>> groups.n_labels, groups.rows_of(0).tolist()
        (3, [0, 2])
    """

    label_of_row: np.ndarray
    offsets: np.ndarray
    members: np.ndarray

    @classmethod
    def from_labels(cls, label_of_row: np.ndarray) -> LabelGroups:
        """Groups from each row's label; labels must be ``0..G-1``, each used at least once."""
        labels = np.asarray(label_of_row, dtype=np.int64)
        if labels.ndim != 1:
            raise ValueError(f"label_of_row must be 1-D, got shape {labels.shape}")
        n_labels = int(labels.max()) + 1 if len(labels) else 0
        counts = np.bincount(labels, minlength=n_labels) if len(labels) else np.zeros(0, dtype=np.int64)
        if len(labels) and (labels.min() < 0 or not counts.all()):
            raise ValueError("labels must be 0..G-1 with every label used by at least one row")
        offsets = np.zeros(n_labels + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(labels, offsets, np.argsort(labels, kind="stable"))

    @classmethod
    def identity(cls, n: int) -> LabelGroups:
        """One label per row (no two rows share a vector)."""
        rows = np.arange(n, dtype=np.int64)
        return cls(rows, np.arange(n + 1, dtype=np.int64), rows)

    @property
    def size(self) -> int:
        """Number of rows."""
        return len(self.label_of_row)

    @property
    def n_labels(self) -> int:
        return len(self.offsets) - 1

    def rows_of(self, label: int) -> np.ndarray:
        """The rows sharing ``label``'s vector, ascending (a view)."""
        return self.members[self.offsets[label] : self.offsets[label + 1]]

    def expand(self, labels: np.ndarray, scores: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``labels`` in their order (rows of one label ascending, with its score), at most
        ``budget`` of them, so a label shared by a million rows costs no more than ``budget``."""
        if self.n_labels == self.size:  # no shared vectors: a label is its row
            return self.members[labels[:budget]], scores[:budget]
        counts = np.minimum(self.offsets[labels + 1] - self.offsets[labels], budget)
        ends = np.cumsum(counts)
        used = min(int(np.searchsorted(ends, budget)) + 1, len(labels))
        counts, ends = counts[:used], ends[:used]
        within = np.arange(int(ends[-1]) if used else 0) - np.repeat(ends - counts, counts)
        rows = self.members[np.repeat(self.offsets[labels[:used]], counts) + within]
        return rows[:budget], np.repeat(scores[:used], counts)[:budget]


class HnswRetriever:
    """Approximate top-k with an hnswlib index (space ``"ip"``) of distinct item vectors minus ``center``.

    Example::

        >>> retriever = HnswRetriever.load("items.hnsw", dim=64, ef=100, groups=groups, center=center)  # doctest: +SKIP
        >>> labels, scores = retriever.search(user_vectors, 100, exclude=[seen_rows])  # doctest: +SKIP
    """

    def __init__(self, index: object, dim: int, ef: int, groups: LabelGroups, center: np.ndarray | None = None) -> None:
        self.index = index
        self.dim = int(dim)
        self.ef = int(ef)
        self.groups = groups
        self.size = groups.size
        center = None if center is None else np.asarray(center, dtype=np.float32).reshape(self.dim)
        self.center = center if center is not None and center.any() else None  # zeros: an uncentred index

    @classmethod
    def load(
        cls, path: str | Path, *, dim: int, ef: int, groups: LabelGroups, center: np.ndarray | None = None
    ) -> HnswRetriever:
        """Load an index file written by ``towerlight_offline.index.build_index``."""
        import hnswlib  # imported here so that importing this module stays cheap

        index = hnswlib.Index(space="ip", dim=int(dim))
        index.load_index(str(path), max_elements=groups.n_labels)
        if index.get_current_count() != groups.n_labels:
            raise ValueError(f"index at {path} holds {index.get_current_count()} vectors, expected {groups.n_labels}")
        index.set_ef(int(ef))
        index.set_num_threads(1)  # one request at a time per Lambda instance
        return cls(index, dim, ef, groups, center)

    def search(
        self, queries: np.ndarray, k: int, *, exclude: Sequence[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query, best first; over-fetches by the exclusion size, then filters."""
        q, k, labels, scores = _prepare(queries, k, exclude, self.dim, self.size)
        if k == 0 or len(q) == 0:
            return labels, scores
        extra = max((len(s) for s in exclude), default=0) if exclude is not None else 0
        # k + extra labels always hold k allowed rows: every label has a row, an excluded row uses up one
        fetch = min(k + extra, self.groups.n_labels)
        self.index.set_ef(max(self.ef, fetch))  # hnswlib cannot return more than ef results
        try:
            raw_labels, distances = self.index.knn_query(q, k=fetch)
        finally:
            self.index.set_ef(self.ef)
        raw_scores = 1.0 - distances  # hnswlib "ip" distance is 1 - <q, x - c>
        if self.center is not None:
            raw_scores += (q @ self.center)[:, None]
        raw_labels = raw_labels.astype(np.int64)
        for row in range(len(q)):
            banned = exclude[row] if exclude is not None else None
            rows, row_scores = self.groups.expand(raw_labels[row], raw_scores[row], k + (len(banned) if banned else 0))
            if banned:
                keep = ~np.isin(rows, np.fromiter(banned, dtype=np.int64, count=len(banned)))
                rows, row_scores = rows[keep], row_scores[keep]
            found = min(k, len(rows))
            labels[row, :found] = rows[:found]
            scores[row, :found] = row_scores[:found]
        return labels, scores


def neighbour_recall(found: np.ndarray, exact: np.ndarray, queries: np.ndarray, embeddings: np.ndarray) -> float:
    """Recall of an approximate search against exact search, by score: the mean share of each query's exact
    neighbours (``exact`` rows, ``-1`` ignored) matched by distinct ``found`` rows whose true inner product
    reaches the query's k-th exact score.

    Rows with the same vector score the same, so a tie at the k-th place may be broken either way; scores are
    recomputed here from ``embeddings`` for both sides with one formula, never taken from the retriever.

    Example::

        >>> emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> neighbour_recall(np.array([[1], [2]]), np.array([[0], [0]]), np.array([[1.0, 0.0]] * 2), emb)
        0.5
    """
    found = np.asarray(found, dtype=np.int64)
    exact = np.asarray(exact, dtype=np.int64)
    if found.shape[0] != exact.shape[0] or len(queries) != exact.shape[0]:
        raise ValueError(f"row counts differ: {found.shape[0]} found, {exact.shape[0]} exact, {len(queries)} queries")
    q = np.asarray(queries, dtype=np.float32)
    emb = np.asarray(embeddings, dtype=np.float32)

    def true_scores(rows: np.ndarray) -> np.ndarray:
        gathered = np.einsum("bd,bkd->bk", q, emb[np.maximum(rows, 0)])
        return np.where(rows >= 0, gathered, -np.inf)

    kth = np.min(np.where(exact >= 0, true_scores(exact), np.inf), axis=1)
    wanted = np.sum(exact >= 0, axis=1)
    distinct = np.sort(found, axis=1)
    distinct[:, 1:][distinct[:, 1:] == distinct[:, :-1]] = -1  # a row returned twice counts once
    hits = np.sum(true_scores(distinct) >= kth[:, None], axis=1)
    shares = np.minimum(hits, wanted)[wanted > 0] / wanted[wanted > 0]
    return float(np.mean(shares)) if len(shares) else 1.0
