"""Per-user chronological train/test split, the protocol of DESIGN.md section 5.

Each user's events are ordered by timestamp; the last ``test_fraction`` of them (rounded to the nearest
count, at least one, at most all but one) go to test, the rest to train. A user with a single event
cannot be both trained on and tested, so that event stays in train: the model still learns from it and
the user is simply not evaluated. Ties on the timestamp keep the input order (a stable sort), so the
same input always gives the same split.

Example::

    >>> frame = pd.DataFrame({"user_id": ["u"] * 5, "item_id": list("abcde"), "timestamp": range(5)})
    >>> split = chronological_split(frame)
    >>> split.test["item_id"].tolist()
    ['e']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """Two interaction frames with the columns of the input, each in its original row order."""

    train: pd.DataFrame
    test: pd.DataFrame


def _chronological_order(interactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row positions sorted by (user, timestamp, input position) and the user codes in that order."""
    user_codes, _ = pd.factorize(interactions["user_id"], sort=False)
    timestamps = interactions["timestamp"].to_numpy()
    # lexsort sorts by the last key first; the row position as the least significant key keeps it stable
    order = np.lexsort((np.arange(len(interactions)), timestamps, user_codes))
    return order, user_codes[order]


def chronological_split(interactions: pd.DataFrame, test_fraction: float = 0.2) -> Split:
    """Hold out the most recent ``test_fraction`` of every user's events.

    ``n_test = clip(round(n * test_fraction), 1, n - 1)`` for a user with ``n >= 2`` events; users with a
    single event are kept whole in train.

    >>> frame = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"], "timestamp": [2, 1, 5]})
    >>> split = chronological_split(frame)
    >>> split.train["item_id"].tolist(), split.test["item_id"].tolist()
    (['y', 'z'], ['x'])
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if interactions.empty:
        return Split(interactions.copy(), interactions.copy())
    order, sorted_users = _chronological_order(interactions)
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(sorted_users)])
    n_test = np.clip(np.floor(counts * test_fraction + 0.5).astype(np.int64), 1, None)
    n_test = np.where(counts >= 2, np.minimum(n_test, counts - 1), 0)
    position = np.arange(len(sorted_users)) - np.repeat(starts, counts)
    is_test_sorted = position >= np.repeat(counts - n_test, counts)
    is_test = np.empty(len(interactions), dtype=bool)
    is_test[order] = is_test_sorted
    return Split(train=interactions[~is_test], test=interactions[is_test])


def validation_split(train: pd.DataFrame, test_fraction: float = 0.2) -> Split:
    """The same rule applied inside a training frame, to tune hyper-parameters without touching test.

    >>> frame = pd.DataFrame({"user_id": ["u"] * 4, "item_id": list("abcd"), "timestamp": range(4)})
    >>> validation_split(chronological_split(frame).train).test["item_id"].tolist()
    ['c']
    """
    return chronological_split(train, test_fraction)


def cold_start_split(split: Split, users: Mapping[str, int]) -> Split:
    """``split`` with each of ``users`` cut to their first ``users[u]`` training events (a cold start).

    The user's later training events are dropped (neither trained on nor tested); their test events stay:
    the user is seen with a short history at the time of the test, and the models never learn the rest.

    >>> frame = pd.DataFrame({"user_id": ["u"] * 5, "item_id": list("abcde"), "timestamp": range(5)})
    >>> cold = cold_start_split(chronological_split(frame), {"u": 2})
    >>> cold.train["item_id"].tolist(), cold.test["item_id"].tolist()
    (['a', 'b'], ['e'])
    """
    train = split.train
    if train.empty or not users:
        return split
    order, _ = _chronological_order(train)
    ordered_users = train["user_id"].astype(str).to_numpy()[order]
    position = pd.Series(ordered_users).groupby(ordered_users).cumcount().to_numpy()
    limit = pd.Series(ordered_users).map(users).to_numpy(dtype=np.float64)  # NaN: a user left whole
    keep_sorted = ~(position >= limit)
    keep = np.empty(len(train), dtype=bool)
    keep[order] = keep_sorted
    return Split(train=train[keep], test=split.test)


def user_histories(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Every user's item ids, most recent first (ties: later input rows count as more recent).

    >>> frame = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["old", "new"], "timestamp": [1, 2]})
    >>> user_histories(frame)
    {'u': ['new', 'old']}
    """
    if interactions.empty:
        return {}
    order, _ = _chronological_order(interactions)
    ordered = interactions.iloc[order[::-1]]
    items = ordered["item_id"].to_numpy()
    users = ordered["user_id"].to_numpy()
    codes, uniques = pd.factorize(users, sort=False)
    # group rows by user while keeping the (reversed, i.e. most recent first) order inside each group
    grouped = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[grouped], np.arange(len(uniques) + 1))
    return {str(user): items[grouped[bounds[i] : bounds[i + 1]]].tolist() for i, user in enumerate(uniques)}
