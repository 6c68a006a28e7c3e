"""Item content as TF-IDF vectors over titles, categories and attributes: the ``content.npz`` artifact.

Each item becomes a bag of terms: the words of its title (``title:toy``), its categories
(``category:comedy``) and its attributes (``year=1990``; numbers are floored to three significant
digits, so a year becomes its decade). Terms found in fewer than ``min_df`` items cannot relate two
items and are dropped. Weights are sublinear tf x smoothed idf, and every row is L2-normalised, so the
inner product of two rows is their cosine similarity. Serving (``towerlight.model.content``) builds a
user's profile from the rows of their recent items and scores the catalogue with it: no scikit-learn,
no scipy, no pickle.

Example::

    >>> arrays = content_arrays([ItemRecord("1", "Toy Story", ["Comedy"], {"year": 1995}),
    ...                          ItemRecord("2", "Toy Story 2", ["Comedy"], {"year": 1999})])
    >>> arrays["terms"].tolist()
    ['category:comedy', 'title:story', 'title:toy', 'year=1990']
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from towerlight.features import ItemRecord

_WORD = re.compile(r"[^\W\d_]{2,}")  # letters only: numbers in titles are noise (years are attributes)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "de",
        "der",
        "die",
        "for",
        "from",
        "in",
        "is",
        "it",
        "la",
        "le",
        "les",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
    ]
)
SIGNIFICANT_DIGITS = 3


def _number_term(name: str, value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{name}={value:g}"
    step = 10 ** (math.floor(math.log10(abs(value))) - SIGNIFICANT_DIGITS + 1)
    return f"{name}={math.floor(value / step) * step:g}"


def item_terms(record: ItemRecord) -> Iterator[str]:
    """The terms of one item (repeats count towards tf).

    >>> list(item_terms(ItemRecord("1", "The Lion King", ["Animation"], {"year": 1994, "lang": "en"})))
    ['title:lion', 'title:king', 'category:animation', 'lang=en', 'year=1990']
    """
    for word in _WORD.findall((record.title or "").casefold()):
        if word not in STOPWORDS:
            yield f"title:{word}"
    for category in record.categories:
        yield f"category:{str(category).strip().casefold()}"
    yield from _attribute_terms(record.attributes or {})


def _attribute_terms(attributes: Mapping[str, Any]) -> Iterator[str]:
    for name, value in sorted(attributes.items()):
        if value is None or value == "" or isinstance(value, dict):
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float | np.number):
                yield f"{name}={str(v).strip().casefold()}"
            elif math.isfinite(float(v)):
                yield _number_term(name, float(v))


def content_arrays(records: Sequence[ItemRecord], *, min_df: int = 2) -> dict[str, np.ndarray]:
    """The arrays of ``content.npz`` for records in catalogue-row order (see ``towerlight.artifacts``).

    ``item_ids`` [N]; ``terms`` [V] (sorted) with their ``idf`` float32 [V]; the item x term matrix as
    CSR: ``indptr`` int64 [N + 1], ``indices`` int32 (term ids, ascending per row) and ``values``
    float32, each row L2-normalised (an item without a kept term has an empty row).
    """
    counts = [Counter(item_terms(record)) for record in records]
    df = Counter(term for bag in counts for term in bag)
    terms = sorted(term for term, n in df.items() if n >= min_df)
    term_id = {term: i for i, term in enumerate(terms)}
    n_items = len(records)
    idf = np.array([math.log((1 + n_items) / (1 + df[t])) + 1.0 for t in terms], dtype=np.float64)
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for row, bag in enumerate(counts):
        kept = sorted((term_id[t], n) for t, n in bag.items() if t in term_id)
        ids = np.fromiter((i for i, _ in kept), dtype=np.int32, count=len(kept))
        weights = np.fromiter((1.0 + math.log(n) for _, n in kept), dtype=np.float64, count=len(kept)) * idf[ids]
        norm = float(np.linalg.norm(weights))
        indices.append(ids)
        values.append((weights / norm if norm > 0 else weights).astype(np.float32))
        indptr[row + 1] = indptr[row] + len(ids)
    return {
        "item_ids": np.asarray([r.item_id for r in records], dtype=str),
        "terms": np.asarray(terms, dtype=str),
        "idf": idf.astype(np.float32),
        "indptr": indptr,
        "indices": np.concatenate(indices) if indices else np.empty(0, dtype=np.int32),
        "values": np.concatenate(values) if values else np.empty(0, dtype=np.float32),
    }
