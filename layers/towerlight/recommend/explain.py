"""``explain=true``: why each item is on the page, cheap enough to leave on.

Per item, ``reasons`` is::

    {"retrieval": {"source": "two_tower", "because": {"item_id": "1", "similarity": 0.83}},
     "ranker": [{"feature": "two_tower_score", "contribution": 0.41}, ...],
     "rules": [{"rule": "pinned", "position": 1}]}

- ``retrieval.source`` is the strategy that found the item (``backfill`` for a back-filled one);
  ``because`` is the user's recent item most similar to it (item embeddings for two_tower and hybrid,
  TF-IDF for content; absent for popularity, or without history); content adds the ``terms`` that
  matched, popularity the demographic ``segment``, hybrid each component's normalised score.
- ``ranker`` lists the second-stage ranker's strongest feature contributions, strongest first (empty
  while no ranker reorders the candidates).
- ``rules`` lists the business rules applied (see ``towerlight.recommend.rules``).

The cost is one [history x page] similarity product and a few lookups per item; ``towerlight bench
explain`` measures it per strategy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from towerlight.recommend.rules import Placement
from towerlight.recommend.strategies import CONTENT_HISTORY, HybridScorer, Scorer, UserContext

Contributions = Mapping[int, Sequence[tuple[str, float]]]  # row -> (feature, contribution), strongest first
TOP_CONTRIBUTIONS = 3


def _because(context: UserContext, strategy: str, rows: np.ndarray) -> list[dict[str, Any] | None]:
    """For each of ``rows``, the most similar recent item of the user (None when nothing relates them)."""
    history = context.history[:CONTENT_HISTORY]
    bundle = context.bundle
    if not len(history) or not len(rows) or strategy == "popularity":
        return [None] * len(rows)
    if strategy != "content" and bundle.two_tower is not None and context.vector is not None:
        embeddings = bundle.two_tower.embeddings
        similarity = embeddings[history] @ embeddings[rows].T
    elif bundle.content is not None:
        similarity = bundle.content.similarity(history, rows)
    else:
        return [None] * len(rows)
    best = similarity.argmax(axis=0)
    ids = bundle.catalogue.item_ids[history[best]].tolist()
    values = similarity[best, np.arange(len(rows))].tolist()
    return [{"item_id": i, "similarity": round(v, 4)} if v > 0 else None for i, v in zip(ids, values, strict=True)]


def reasons(
    context: UserContext, scorer: Scorer, page: Sequence[Placement], contributions: Contributions | None = None
) -> list[dict[str, Any]]:
    """The ``reasons`` of every placed row, in page order."""
    rows = np.fromiter((p.row for p in page), dtype=np.int64, count=len(page))
    because = _because(context, scorer.name, rows)
    components = scorer.components(rows) if isinstance(scorer, HybridScorer) else {}
    content = context.bundle.content
    out = []
    for n, placement in enumerate(page):
        backfilled = any(rule["rule"] == "backfilled" for rule in placement.applied)
        retrieval: dict[str, Any] = {"source": "backfill" if backfilled else scorer.name}
        if because[n] is not None:
            retrieval["because"] = because[n]
        if scorer.name == "content" and content is not None and context.profile is not None:
            retrieval["terms"] = content.top_terms(context.profile, placement.row)
        elif scorer.name == "popularity" and context.segment:
            retrieval["segment"] = context.segment
        if components:
            retrieval["components"] = {name: round(float(v[n]), 4) for name, v in components.items()}
        ranker = (contributions or {}).get(placement.row, ())[:TOP_CONTRIBUTIONS]
        out.append(
            {
                "retrieval": retrieval,
                "ranker": [{"feature": f, "contribution": round(float(c), 4)} for f, c in ranker],
                "rules": placement.applied,
            }
        )
    return out
