"""Impressions in Postgres and the strategy bandit's counters, updated exactly once per unique row.

An impression is one recommendation response: who saw which items, from which strategy (arm) in which
segment, with which probability. Its reward is the best reward (``event_types.py``) among the events that
carry its ``recommendation_id`` for one of its items. ``record_feedback`` stores impressions and brings
rewards up to date, adding to ``bandit_arms`` only the difference it made:

- an impression counts once: it is inserted with ``ON CONFLICT DO NOTHING RETURNING``, and only the
  returned (new) rows add to ``impressions``;
- a reward is recomputed from the events table (a maximum, so recomputing is idempotent) and only the
  change of an impression's stored reward is added to ``reward_sum`` / ``successes``;
- an event may arrive before its impression: the impression, when it arrives, picks up stored events.
  Writers of one recommendation are serialized by a transaction-level advisory lock on its bucket, so an
  event and its impression committed concurrently still see each other (READ COMMITTED: each statement
  after the lock sees what the previous holder committed).

Example::

    >>> with conn.transaction():
    ...     new_ids = insert_events(conn, rows)
    ...     record_feedback(conn, impressions, [r.recommendation_id for r in rows if r.recommendation_id])
    FeedbackResult(impressions=3, rewarded=1)
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg
import pydantic_core

from towerlight.bandit.arms import ArmDelta, add_to_arms
from towerlight.event_types import EVENT_TYPES

# Recommendation ids hash into this many advisory locks: a batch takes at most this many, sorted (no
# deadlock between consumers), and Postgres' shared lock table (64 per connection by default) keeps room.
LOCK_BUCKETS = 32
# The first key of the two-key advisory lock form: keeps these locks apart from any other user's.
LOCK_NAMESPACE = 0x546C_4244  # "TlBD"

_REWARDS = {name: t.reward for name, t in EVENT_TYPES.items() if t.reward > 0}

_INSERT_IMPRESSIONS = """
INSERT INTO impressions (recommendation_id, user_id, segment, strategy, variant, model_version, item_ids,
                         propensity, item_propensities, created_at)
SELECT recommendation_id, user_id, segment, strategy, variant, model_version, item_ids,
       propensity, item_propensities, created_at
FROM jsonb_to_recordset(%s::jsonb) AS x(
    recommendation_id text, user_id text, segment text, strategy text, variant text, model_version text,
    item_ids text[], propensity float8, item_propensities float8[], created_at timestamptz)
ORDER BY recommendation_id
ON CONFLICT (recommendation_id) DO NOTHING
RETURNING recommendation_id
"""
_LOCK_BUCKETS = "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int4[]) AS k"
# The stored reward of each impression beside the best reward of its attributed events, now.
_REWARDS_NOW = """
SELECT i.recommendation_id, i.segment, i.strategy, i.reward, coalesce(max(w.reward), 0)
FROM impressions i
LEFT JOIN events e ON e.recommendation_id = i.recommendation_id AND e.item_id = ANY(i.item_ids)
LEFT JOIN unnest(%(types)s::text[], %(rewards)s::float8[]) AS w(event_type, reward) USING (event_type)
WHERE i.recommendation_id = ANY(%(ids)s)
GROUP BY i.recommendation_id
"""
_LOGGED = (
    "SELECT segment, strategy, propensity, reward FROM impressions"
    " WHERE created_at >= %s AND created_at < %s ORDER BY created_at, recommendation_id"
)
_SET_REWARDS = """
UPDATE impressions i SET reward = v.reward
FROM unnest(%s::text[], %s::float8[]) AS v(recommendation_id, reward)
WHERE i.recommendation_id = v.recommendation_id
"""


@dataclass(frozen=True, slots=True)
class Impression:
    """One recommendation response as shown: ``item_ids[p - 1]`` was at position ``p``.

    ``propensity`` is the probability with which ``strategy`` was chosen (1.0 when nothing was random);
    ``item_propensities``, when an item-level explorer chose the items, the probability of each.
    """

    recommendation_id: str
    user_id: str
    segment: str
    strategy: str
    model_version: str
    item_ids: tuple[str, ...]
    propensity: float
    created_at: datetime
    variant: str | None = None
    item_propensities: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.propensity <= 1.0:
            raise ValueError(f"impression {self.recommendation_id}: propensity must be in (0, 1]")
        if self.created_at.tzinfo is None:
            raise ValueError(f"impression {self.recommendation_id}: created_at must be timezone-aware")
        if self.item_propensities is not None and len(self.item_propensities) != len(self.item_ids):
            raise ValueError(f"impression {self.recommendation_id}: one item propensity per item")


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """Impressions newly stored, and impressions whose reward rose (each counted in ``bandit_arms``)."""

    impressions: int
    rewarded: int


def lock_buckets(recommendation_ids: Iterable[str]) -> list[int]:
    """The sorted advisory-lock buckets of ``recommendation_ids`` (stable across processes: CRC-32).

    >>> lock_buckets(["b", "a", "b"])
    [7, 19]
    """
    return sorted({zlib.crc32(r.encode()) % LOCK_BUCKETS for r in recommendation_ids})


def record_feedback(
    conn: psycopg.Connection, impressions: Sequence[Impression], event_recommendation_ids: Iterable[str]
) -> FeedbackResult:
    """Store ``impressions`` (new ones only) and credit rewards of stored events to their impressions.

    ``event_recommendation_ids`` are the ``recommendation_id`` of events already written in the caller's
    transaction (passing ids of replayed events is harmless: rewards are recomputed, not added blindly).
    Runs in the caller's transaction (or its own, on an idle connection) at READ COMMITTED.

    Example::

        >>> record_feedback(conn, [impression], [])
        FeedbackResult(impressions=1, rewarded=0)
        >>> record_feedback(conn, [impression], [])  # a redelivery
        FeedbackResult(impressions=0, rewarded=0)
    """
    unique = sorted({i.recommendation_id: i for i in impressions}.values(), key=lambda i: i.recommendation_id)
    touched = {i.recommendation_id for i in unique}.union(event_recommendation_ids)
    if not touched:
        return FeedbackResult(0, 0)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_LOCK_BUCKETS, [LOCK_NAMESPACE, lock_buckets(touched)])
        new: set[str] = set()
        if unique:
            cur.execute(_INSERT_IMPRESSIONS, [pydantic_core.to_json([asdict(i) for i in unique]).decode()])
            new = {row[0] for row in cur.fetchall()}
        cur.execute(_REWARDS_NOW, {"types": list(_REWARDS), "rewards": list(_REWARDS.values()), "ids": sorted(touched)})
        deltas: dict[tuple[str, str], ArmDelta] = defaultdict(ArmDelta)
        raised: list[tuple[str, float]] = []
        for recommendation_id, segment, strategy, stored, best in cur.fetchall():
            reward = max(stored, best)  # never lowered: a credited reward stays credited
            delta = deltas[(segment, strategy)]
            if recommendation_id in new:
                delta.impressions += 1
            if reward > stored:
                raised.append((recommendation_id, reward))
                delta.reward_sum += reward - stored
                delta.successes += int(stored == 0)
        if raised:
            cur.execute(_SET_REWARDS, [[r for r, _ in raised], [v for _, v in raised]])
        add_to_arms(conn, {key: d for key, d in deltas.items() if d})
    return FeedbackResult(len(new), len(raised))


def logged_decisions(
    conn: psycopg.Connection, since: datetime, until: datetime
) -> tuple[list[str], list[str], list[float], list[float]]:
    """Columns (segments, strategies, propensities, rewards) of impressions created in ``[since, until)``.

    What off-policy evaluation reads; leave out recent impressions whose rewards may still arrive.
    """
    rows = conn.execute(_LOGGED, [since, until]).fetchall()
    if not rows:
        return [], [], [], []
    segments, strategies, propensities, rewards = (list(column) for column in zip(*rows, strict=True))
    return segments, strategies, propensities, rewards
