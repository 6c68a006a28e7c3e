"""The published popularity artifact (``popularity.npz``): time-decayed popularity, overall and per segment.

An event of age ``a`` days counts ``0.5 ** (a / half_life_days)``, so what is popular now outranks what
was popular a year ago. Ages are measured from ``now`` (default: the newest event, so a historical
dataset is not decayed to nothing). Scores are divided by the best one (best = 1.0) to stay well inside
float32.

A segment is one user attribute token as the feature spec spells it (``gender=F``, ``occupation=writer``,
``age#3`` for the fourth age bucket), so serving can derive a user's segments from the same
``FeatureSpec``. Segment rankings are stored as rows into ``item_ids``, which therefore holds the global
top ``top_n`` plus any item a segment ranks in its own top ``top_n``, all ordered by global score.

Example::

    >>> arrays = build_popularity(dataset.interactions, dataset.users, spec=spec)
    >>> np.savez(path, **arrays)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from towerlight.features import FeatureSpec

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400.0


def user_segment_tokens(spec: FeatureSpec, attributes: Mapping[str, Any] | None) -> list[str]:
    """The known user tokens of one user, through ``FeatureSpec.encode_user`` (one per field at most).

    >>> users = [{"gender": "F", "age": 30}, {"gender": "M", "age": 50}]
    >>> spec = FeatureSpec.fit([], users, numeric_buckets=2)
    >>> user_segment_tokens(spec, {"gender": "F", "age": 60})
    ['age#1', 'gender=F']
    """
    known = spec.user_tokens.values
    return [known[i - 1] for i in spec.encode_user(attributes) if 0 < i <= len(known)]


def _decayed_weights(timestamps: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    age_days = np.clip(now - timestamps.astype(np.float64), 0.0, None) / SECONDS_PER_DAY
    return np.exp2(-age_days / half_life_days)


def _ranked(scores: pd.Series, top_n: int) -> pd.Series:
    """Best first, ties broken by item id so the artifact is the same on every run."""
    frame = scores.rename("score").rename_axis("item_id").reset_index()
    frame = frame.sort_values(["score", "item_id"], ascending=[False, True], kind="stable")
    return frame.set_index("item_id")["score"].iloc[:top_n]


def build_popularity(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    *,
    spec: FeatureSpec | None = None,
    half_life_days: float = 30.0,
    now: float | None = None,
    top_n: int = 1000,
    min_segment_users: int = 10,
) -> dict[str, np.ndarray]:
    """Arrays for ``popularity.npz`` (see ``towerlight.artifacts``), from positive interactions.

    ``spec`` names the segments (fitted on ``users`` alone when not given); a segment with fewer than
    ``min_segment_users`` active users is left out (too noisy to beat the global list).

    >>> arrays = build_popularity(interactions, users, spec=spec, top_n=100)
    >>> arrays["item_ids"][:3], arrays["segments"][:2]
    (array(['313', '258', '300'], dtype='<U4'), array(['age#0', 'age#1'], dtype='<U24'))
    """
    if half_life_days <= 0:
        raise ValueError("half_life_days must be positive")
    if interactions.empty:
        empty = np.zeros(0, dtype=np.int64)
        return {
            "item_ids": np.zeros(0, dtype=str),
            "scores": np.zeros(0, dtype=np.float32),
            "segments": np.zeros(0, dtype=str),
            "segment_offsets": np.zeros(1, dtype=np.int64),
            "segment_items": empty,
        }
    timestamps = interactions["timestamp"].to_numpy()
    now = float(timestamps.max()) if now is None else float(now)
    events = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(str).to_numpy(),
            "item_id": interactions["item_id"].astype(str).to_numpy(),
            "weight": _decayed_weights(timestamps, now, half_life_days),
        }
    )
    overall = events.groupby("item_id", sort=False)["weight"].sum()
    overall = overall / overall.max()

    spec = spec or FeatureSpec.fit([], users["attributes"].tolist())
    memberships = pd.DataFrame(
        [
            (str(user), token)
            for user, attributes in zip(users["user_id"], users["attributes"], strict=True)
            for token in user_segment_tokens(spec, attributes)
        ],
        columns=["user_id", "segment"],
    )
    segment_events = events.merge(memberships, on="user_id", how="inner")
    active = segment_events.groupby("segment")["user_id"].nunique()
    segment_names = sorted(active.index[active >= min_segment_users])
    by_segment = segment_events[segment_events["segment"].isin(segment_names)]
    segment_scores = by_segment.groupby(["segment", "item_id"], sort=False)["weight"].sum()
    rankings = {name: _ranked(segment_scores.loc[name], top_n).index for name in segment_names}

    top_items = _ranked(overall, top_n).index
    extra = pd.Index(np.concatenate([r.to_numpy() for r in rankings.values()] or [np.zeros(0, dtype=str)]))
    published = _ranked(overall.loc[top_items.union(extra.unique())], len(overall))
    rows = pd.Index(published.index)
    offsets = np.cumsum([0] + [len(rankings[name]) for name in segment_names], dtype=np.int64)
    segment_items = (
        np.concatenate([rows.get_indexer(rankings[name]) for name in segment_names]).astype(np.int64)
        if segment_names
        else np.zeros(0, dtype=np.int64)
    )
    logger.info("popularity: %d items, %d segments", len(rows), len(segment_names))
    return {
        "item_ids": rows.to_numpy(dtype=str),
        "scores": published.to_numpy(dtype=np.float32),
        "segments": np.asarray(segment_names, dtype=str),
        "segment_offsets": offsets,
        "segment_items": segment_items,
    }
