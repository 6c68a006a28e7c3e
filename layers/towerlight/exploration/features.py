"""VW text examples for item exploration: one shared line about the user, one line per candidate action.

Namespaces (VW pairs them for interactions by their first letter):

- ``User`` (the shared line): history length bucket ``h``, bandit segment ``seg`` (cold/warm), demographic
  popularity segment ``demo`` when the model has one, the strategy served ``s``, and the top categories
  ``c`` of the user's recent items;
- ``Item``: ``id`` and the categories ``c`` of the candidate;
- ``Rank``: the candidate's place ``r`` among the slot's options (0: the one the ranked order puts there),
  its score bucket ``sb`` (min-max over the options, 0..4) and popularity bucket ``pb`` (log2 of the most
  popular item's score over its own; ``none`` without popularity).

``User x Item`` learns which items and categories each kind of user takes, ``User x Rank`` how far the
ranked order is to be trusted for them. Tokens are percent-escaped (whitespace, ``|``, ``:``, ``%``), so
any item id or category name stays one feature.

Example::

    >>> shared = user_features(catalogue, history_rows, segment="warm", demographic=None, strategy="two_tower")
    >>> shared
    'shared |User h=3 seg=warm s=two_tower c=Drama c=Comedy'
    >>> action_features(catalogue, popularity, np.array([49, 180]), np.array([0.9, 0.4]))[1]
    '|Item id=181 c=Action c=Sci-Fi |Rank r=1 sb=0 pb=1'
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from towerlight.model.bundle import Catalogue, Popularity

# Recent history items whose categories describe the user, and how many of those categories are kept.
RECENT_ITEMS = 20
TOP_CATEGORIES = 3
SCORE_BUCKETS = 5
MAX_POPULARITY_BUCKET = 10
# What the learner creates a new model with; a saved model keeps them (recommend loads it with -i).
VW_ARGS = ("--cb_explore_adf", "--interactions", "UI", "--interactions", "UR", "--bit_precision", "18")

_SPECIAL = re.compile(r"[\s|:%]")


def escape(token: str) -> str:
    """``token`` with the characters VW's text format gives a meaning to percent-encoded.

    >>> escape("Sci Fi|2:1")
    'Sci%20Fi%7C2%3A1'
    """
    return _SPECIAL.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), token)


def _categories(catalogue: Catalogue, row: int) -> list[str]:
    names = catalogue.categories.names
    return [names[code] for code in catalogue.categories.codes_of_row(row).tolist()]


def user_features(
    catalogue: Catalogue, history: np.ndarray, *, segment: str, demographic: str | None, strategy: str
) -> str:
    """The shared line: who the user is, from ``history`` (catalogue rows, newest first) and their segments."""
    counts: Counter[str] = Counter()
    for row in history[:RECENT_ITEMS].tolist():
        counts.update(_categories(catalogue, row))
    tokens = [f"h={int(math.log2(1 + len(history)))}", f"seg={escape(segment)}", f"s={escape(strategy)}"]
    if demographic:
        tokens.append(f"demo={escape(demographic)}")
    tokens += [f"c={escape(name)}" for name, _ in counts.most_common(TOP_CATEGORIES)]
    return "shared |User " + " ".join(tokens)


def _popularity_bucket(popularity: Popularity, row: int) -> str:
    top = float(popularity.score_by_row[popularity.rows[0]]) if len(popularity.rows) else 0.0
    score = float(popularity.score_by_row[row]) if row < len(popularity.score_by_row) else 0.0
    if top <= 0.0 or score <= 0.0:
        return "none"
    return str(min(MAX_POPULARITY_BUCKET, int(math.log2(top / score))))


def action_features(catalogue: Catalogue, popularity: Popularity, rows: np.ndarray, scores: np.ndarray) -> list[str]:
    """One line per candidate ``rows[i]`` (in the ranked order) with its model score ``scores[i]``."""
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    spread = high - low
    lines = []
    for position, (row, score) in enumerate(zip(rows.tolist(), values.tolist(), strict=True)):
        relative = (score - low) / spread if spread > 0 else 1.0
        bucket = min(SCORE_BUCKETS - 1, int(relative * SCORE_BUCKETS))
        item = [f"id={escape(str(catalogue.item_ids[row]))}", *(f"c={escape(c)}" for c in _categories(catalogue, row))]
        rank = f"r={position} sb={bucket} pb={_popularity_bucket(popularity, row)}"
        lines.append(f"|Item {' '.join(item)} |Rank {rank}")
    return lines


def vw_example(shared: str, actions: Sequence[str], label: tuple[int, float, float] | None = None) -> list[str]:
    """The multi-line ADF example; ``label`` = (chosen action, cost, probability) for learning.

    >>> vw_example("shared |User h=0", ["|Item id=a", "|Item id=b"], (1, -0.5, 0.9))
    ['shared |User h=0', '|Item id=a', '0:-0.500000:0.90000000 |Item id=b']
    """
    lines = [shared, *actions]
    if label is not None:
        chosen, cost, probability = label
        lines[chosen + 1] = f"0:{cost:.6f}:{probability:.8f} {actions[chosen]}"
    return lines
