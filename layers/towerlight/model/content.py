"""The content index of a version: TF-IDF rows of every item (``content.npz``) and their term postings.

Row ``i`` is catalogue row ``i``; rows are L2-normalised, so inner products are cosine similarities.
A user's profile is the recency-weighted sum of their recent items' rows; scoring walks the postings of
the profile's strongest terms only, so a request touches the items sharing a term with the user, never
the whole catalogue. Written offline by ``towerlight_offline.content``.

Example::

    >>> content = bundle.content
    >>> profile = content.profile(np.array([0, 70]))
    >>> rows, scores = content.score_all(profile)
    >>> content.top_terms(profile, 94)
    ['category:animation', "category:children's", 'title:aladdin']
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from towerlight.errors import ArtifactError

CONTENT_ARRAYS = ("item_ids", "terms", "indptr", "indices", "values")
# The profile's strongest terms that scoring walks: bounds the cost on a large catalogue.
MAX_PROFILE_TERMS = 64
# Weight of the i-th most recent history item: RECENCY_DECAY ** i.
RECENCY_DECAY = 0.9


def _segments(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the CSR entries of ``rows`` and, for each, the index of its row in ``rows``."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), lengths)
    firsts = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(firsts, lengths) + np.repeat(starts, lengths)
    return positions, owner


@dataclass(frozen=True)
class _Postings:
    """The transpose: the rows holding term t are ``rows[indptr[t]:indptr[t + 1]]``, ascending."""

    indptr: np.ndarray  # int64 [V + 1]
    rows: np.ndarray  # int32
    values: np.ndarray  # float32


@dataclass(frozen=True, eq=False)
class ContentIndex:
    """Item x term TF-IDF matrix (CSR), checked when a version loads; its transpose (term postings) is
    built on the first ``score_all``, which only the content and hybrid strategies call: a cold start
    serving two-tower requests never pays for it."""

    terms: np.ndarray  # unicode [V]
    indptr: np.ndarray  # int64 [N + 1]
    indices: np.ndarray  # int32 term ids (int32 like every row and term count: half the memory of int64)
    values: np.ndarray  # float32

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], item_ids: np.ndarray, version: str) -> ContentIndex:
        """Check ``content.npz``'s arrays against the catalogue's ``item_ids`` and index them."""
        missing = [name for name in CONTENT_ARRAYS if name not in arrays]
        if missing:
            raise ArtifactError(f"content.npz of {version!r} lacks {missing}", {"file": "content.npz"})
        if not np.array_equal(arrays["item_ids"].astype(str), item_ids):
            raise ArtifactError(f"content.npz and items.npz of {version!r} list different items")
        terms = arrays["terms"].astype(str)
        indptr = arrays["indptr"].astype(np.int64, copy=False)
        indices = arrays["indices"].astype(np.int32, copy=False)
        values = arrays["values"].astype(np.float32, copy=False)
        if len(indptr) != len(item_ids) + 1 or indptr[-1] != len(indices) or len(values) != len(indices):
            raise ArtifactError(f"content.npz of {version!r}: indptr, indices and values do not match")
        if len(indices) and (arrays["indices"].min() < 0 or arrays["indices"].max() >= len(terms)):
            raise ArtifactError(f"content.npz of {version!r}: a term id is out of range")
        if np.any(np.diff(indptr) < 0):
            raise ArtifactError(f"content.npz of {version!r}: indptr is not ascending")
        return cls(terms, indptr, indices, values)

    @functools.cached_property
    def _postings(self) -> _Postings:
        # Two threads may both build it on first use: the same arrays, one of them kept.
        rows = np.repeat(np.arange(self.size, dtype=np.int32), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")  # stable: rows stay ascending within a term
        indptr = np.zeros(len(self.terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.indices, minlength=len(self.terms)), out=indptr[1:])
        return _Postings(indptr, rows[order], self.values[order])

    @property
    def size(self) -> int:
        return len(self.indptr) - 1

    def profile(self, rows: np.ndarray) -> np.ndarray | None:
        """The L2-normalised profile float32 [V] of items ``rows`` (most recent first); None if empty."""
        weights = RECENCY_DECAY ** np.arange(len(rows), dtype=np.float64)
        positions, owner = _segments(self.indptr, np.asarray(rows, dtype=np.int64))
        profile = np.bincount(
            self.indices[positions], weights=self.values[positions] * weights[owner], minlength=len(self.terms)
        )
        norm = float(np.linalg.norm(profile))
        return (profile / norm).astype(np.float32) if norm > 0 else None

    def score_all(self, profile: np.ndarray, max_terms: int = MAX_PROFILE_TERMS) -> tuple[np.ndarray, np.ndarray]:
        """Rows sharing a term with ``profile`` (ascending) and their cosine with it.

        Only the ``max_terms`` strongest terms of the profile are walked.
        """
        terms = np.flatnonzero(profile)
        if len(terms) > max_terms:
            terms = terms[np.argpartition(-profile[terms], max_terms - 1)[:max_terms]]
        postings = self._postings
        positions, owner = _segments(postings.indptr, terms)
        rows, at = np.unique(postings.rows[positions], return_inverse=True)
        scores = np.bincount(at, weights=postings.values[positions] * profile[terms][owner], minlength=len(rows))
        return rows.astype(np.int64), scores.astype(np.float32)

    def scores(self, profile: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine of each of ``rows`` with ``profile``, float32 [len(rows)]."""
        positions, owner = _segments(self.indptr, np.asarray(rows, dtype=np.int64))
        contributions = self.values[positions] * profile[self.indices[positions]]
        return np.bincount(owner, weights=contributions, minlength=len(rows)).astype(np.float32)

    def similarity(self, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
        """Cosine similarities float32 [len(rows_a), len(rows_b)] between two small sets of rows."""
        pos_a, own_a = _segments(self.indptr, np.asarray(rows_a, dtype=np.int64))
        pos_b, own_b = _segments(self.indptr, np.asarray(rows_b, dtype=np.int64))
        used, local = np.unique(np.concatenate([self.indices[pos_a], self.indices[pos_b]]), return_inverse=True)
        a = np.zeros((len(rows_a), len(used)), dtype=np.float32)
        b = np.zeros((len(rows_b), len(used)), dtype=np.float32)
        a[own_a, local[: len(pos_a)]] = self.values[pos_a]
        b[own_b, local[len(pos_a) :]] = self.values[pos_b]
        return a @ b.T

    def top_terms(self, profile: np.ndarray, row: int, n: int = 3) -> list[str]:
        """The ``n`` terms contributing most to ``row``'s score for ``profile`` (strongest first)."""
        start, end = self.indptr[row], self.indptr[row + 1]
        contributions = self.values[start:end] * profile[self.indices[start:end]]
        best = np.argsort(-contributions, kind="stable")[:n]
        return [str(self.terms[self.indices[start + i]]) for i in best if contributions[i] > 0]
