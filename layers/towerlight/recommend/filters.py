"""Which rows a request may return (the ``Exclusions``), and walks down long lists of rows.

Row sets are sorted int64 arrays of catalogue rows; membership of a few candidates is a binary search,
so a request costs O(candidates x log N) and never allocates anything the size of the catalogue. The
category sets come from the bundle's ``CategoryIndex`` (views, built once per model version).

Example::

    >>> rules = build_exclusions(bundle.catalogue, banned_ids={"50"}, inactive_rows=EMPTY_ROWS,
    ...                          categories=["Comedy"], exclude_categories=["Horror"])
    >>> rules.allowed(np.array([0, 49, 120])).tolist()
    [True, False, False]
    >>> take_allowed([bundle.popularity.rows], rules, 10).tolist()
    [0, 171, ...]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np

from towerlight.errors import ValidationError
from towerlight.model.bundle import Catalogue

EMPTY_ROWS = np.empty(0, dtype=np.int64)
# A walk down a long list (popularity, the catalogue) examines at most this many rows at once.
MAX_CHUNK_ROWS = 4096


def sorted_rows(rows: Iterable[int]) -> np.ndarray:
    """Unique rows as a sorted int64 array (the row-set form every filter takes).

    >>> sorted_rows([5, 1, 5]).tolist()
    [1, 5]
    """
    return np.unique(np.fromiter(rows, dtype=np.int64))


def contains(row_set: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``rows`` are in the sorted ``row_set``.

    >>> contains(np.array([2, 4]), np.array([1, 2, 4, 9])).tolist()
    [False, True, True, False]
    """
    if len(row_set) == 0:
        return np.zeros(len(rows), dtype=bool)
    at = np.searchsorted(row_set, rows)
    np.minimum(at, len(row_set) - 1, out=at)
    return row_set[at] == rows


@dataclass(frozen=True, slots=True)
class Exclusions:
    """The filters of one request: banned rows, inactive rows and category constraints.

    A row is allowed when it is neither banned (seen, removed, excluded by id) nor inactive, belongs to
    one of the ``include`` categories (if any are given) and to none of the ``exclude`` ones.
    """

    banned: np.ndarray
    inactive: np.ndarray
    include: tuple[np.ndarray, ...] = ()
    exclude: tuple[np.ndarray, ...] = ()

    def allowed(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask over ``rows``.

        >>> Exclusions(banned=np.array([3]), inactive=EMPTY_ROWS).allowed(np.array([3, 4])).tolist()
        [False, True]
        """
        keep = ~contains(self.banned, rows) & ~contains(self.inactive, rows)
        if self.include:
            keep &= reduce(np.logical_or, (contains(members, rows) for members in self.include))
        for members in self.exclude:
            keep &= ~contains(members, rows)
        return keep

    def banned_set(self) -> set[int]:
        """The banned rows as a set (what ``Retriever.search(exclude=...)`` takes)."""
        return set(self.banned.tolist())

    def included_rows(self, limit: int) -> np.ndarray | None:
        """Every row of the ``include`` categories when there are at most ``limit``, else None.

        A small category is cheaper and exact to score whole than to find in an ANN candidate list.
        """
        if not self.include or sum(len(members) for members in self.include) > limit:
            return None
        if len(self.include) == 1:
            return self.include[0]
        return reduce(np.union1d, self.include)


def build_exclusions(
    catalogue: Catalogue,
    *,
    banned_ids: Iterable[str],
    inactive_rows: np.ndarray,
    categories: Sequence[str] = (),
    exclude_categories: Sequence[str] = (),
) -> Exclusions:
    """The ``Exclusions`` of a request; an unknown name in ``categories`` is a ``ValidationError`` (422).

    Unknown item ids and unknown excluded categories are ignored: there is nothing to remove.

    >>> build_exclusions(catalogue, banned_ids=["50", "nope"], inactive_rows=EMPTY_ROWS).banned.tolist()
    [49]
    """
    index = catalogue.categories
    unknown = [name for name in categories if not index.codes_of(name)]
    if unknown:
        raise ValidationError(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'}: {', '.join(map(repr, unknown))}",
            {"unknown": unknown, "known": sorted(index.names)},
        )
    return Exclusions(
        banned=sorted_rows(catalogue.rows_of(banned_ids)),
        inactive=inactive_rows,
        include=tuple(index.rows(c) for name in categories for c in index.codes_of(name)),
        exclude=tuple(index.rows(c) for name in exclude_categories for c in index.codes_of(name)),
    )


def catalogue_chunks(size: int, chunk: int = MAX_CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Every row ``0..size-1`` in order, a chunk at a time (never one array of the catalogue's size).

    >>> [c.tolist() for c in catalogue_chunks(5, chunk=2)]
    [[0, 1], [2, 3], [4]]
    """
    for start in range(0, size, chunk):
        yield np.arange(start, min(start + chunk, size), dtype=np.int64)


def _chunks(sources: Iterable[np.ndarray], first: int) -> Iterator[np.ndarray]:
    """Views of ``sources`` in order, in chunks that start small (most requests stop early) and double."""
    size = first
    for source in sources:
        start = 0
        while start < len(source):
            yield source[start : start + size]
            start += size
            size = min(2 * size, MAX_CHUNK_ROWS)


def take_allowed(sources: Iterable[np.ndarray], rules: Exclusions, k: int) -> np.ndarray:
    """The first ``k`` allowed rows of ``sources`` (walked in order, chunk by chunk), each once.

    ``sources`` is read lazily: pass ``itertools.chain(popular_rows, catalogue_chunks(n))`` to fall
    back on the whole catalogue without materialising it.

    >>> rules = Exclusions(banned=np.array([1]), inactive=EMPTY_ROWS)
    >>> take_allowed([np.array([1, 2]), np.array([2, 3, 4])], rules, 2).tolist()
    [2, 3]
    """
    taken: list[np.ndarray] = []
    seen = EMPTY_ROWS
    count = 0
    for block in _chunks(sources, max(2 * k, 32)):
        if count >= k:
            break
        block = block[rules.allowed(block) & ~contains(seen, block)]
        if len(block):
            block = block[: k - count]
            taken.append(block)
            count += len(block)
            seen = np.union1d(seen, block)  # sources may overlap (a segment, then overall popularity)
    return np.concatenate(taken) if taken else EMPTY_ROWS
