"""Item tables as compressed rows (CSR), shared by ``items.npz`` and the ranker's tables.

Example::

    >>> names, codes = category_codes([ItemRecord("1", "Toy Story", ["Comedy", "Animation"], {})])
    >>> names, codes, csr(codes)
    (['Animation', 'Comedy'], [[1, 0]], (array([0, 2]), array([1, 0], dtype=int32)))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from towerlight.features import ItemRecord


def csr(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets int64 [N + 1], codes int32)``: row i's codes are ``codes[offsets[i]:offsets[i + 1]]``."""
    offsets = np.cumsum([0] + [len(v) for v in lists], dtype=np.int64)
    codes = np.fromiter((c for v in lists for c in v), dtype=np.int32, count=int(offsets[-1]))
    return offsets, codes


def category_codes(records: Sequence[ItemRecord]) -> tuple[list[str], list[list[int]]]:
    """The sorted category names and each record's categories as indices into them, in record order."""
    names = sorted({c for r in records for c in r.categories})
    code = {name: i for i, name in enumerate(names)}
    return names, [[code[c] for c in r.categories] for r in records]
