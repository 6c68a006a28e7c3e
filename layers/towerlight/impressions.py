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
    FeedbackResult(impressions=('0b1e...', '5c2a...', '9f1c...'), rewarded=1)
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated

import psycopg
import pydantic
import pydantic_core
from psycopg import pq
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from towerlight.bandit.arms import ArmDelta, add_to_arms
from towerlight.errors import ValidationError
from towerlight.event_types import EVENT_TYPES
from towerlight.exploration.records import Exploration, ExplorationMessage
from towerlight.queue import send_messages

logger = logging.getLogger(__name__)

# Impressions share the events queue; their body is {"impression": {...}}, always written compactly by
# impression_message, while an interaction event's body is the event object itself (see tracking.py).
_MESSAGE_PREFIX = '{"impression":'
MAX_ITEMS = 100  # the most items one recommendation response shows (k ≤ 100)

# Recommendation ids hash into this many advisory locks: a batch takes at most this many, sorted (no
# deadlock between consumers), and Postgres' shared lock table (64 per connection by default) keeps room.
LOCK_BUCKETS = 32
# The first key of the two-key advisory lock form: keeps these locks apart from any other user's.
LOCK_NAMESPACE = 0x546C_4244  # "TlBD"

_REWARDS = {name: t.reward for name, t in EVENT_TYPES.items() if t.reward > 0}
# Lists go as one text (JSON, or an int array literal): psycopg adapts a Python list element by element
# (~2 µs each), and a batch of events carries hundreds of recommendation ids.
_REWARDS_JSON = pydantic_core.to_json(_REWARDS).decode()

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
LEFT JOIN (SELECT key, value::float8 FROM jsonb_each_text(%(rewards)s::jsonb)) AS w(event_type, reward)
    USING (event_type)
WHERE i.recommendation_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
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
    ``item_propensities``, when an item-level explorer chose the items, the probability of each;
    ``exploration``, when the VW explorer chose one slot's item, that decision and its probability.
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
    exploration: Exploration | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.propensity <= 1.0:
            raise ValueError(f"impression {self.recommendation_id}: propensity must be in (0, 1]")
        if self.created_at.tzinfo is None:
            raise ValueError(f"impression {self.recommendation_id}: created_at must be timezone-aware")
        if self.item_propensities is not None and len(self.item_propensities) != len(self.item_ids):
            raise ValueError(f"impression {self.recommendation_id}: one item propensity per item")


_Text = Annotated[str, Field(min_length=1, max_length=256)]


class ImpressionMessage(BaseModel):
    """An impression as it travels through SQS (validated again by ingest: the queue is a trust boundary)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recommendation_id: _Text
    user_id: _Text
    segment: _Text
    strategy: _Text
    model_version: _Text
    item_ids: Annotated[tuple[_Text, ...], Field(max_length=MAX_ITEMS)]
    propensity: Annotated[float, Field(gt=0, le=1)]
    created_at: AwareDatetime
    variant: _Text | None = None
    item_propensities: (
        Annotated[tuple[Annotated[float, Field(gt=0, le=1)], ...], Field(max_length=MAX_ITEMS)] | None
    ) = None
    exploration: ExplorationMessage | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    impression: ImpressionMessage


class InvalidImpressionError(ValidationError):
    """A message that claims to be an impression but is not a valid one."""

    code = "invalid_impression"


def impression_message(impression: Impression) -> str:
    """The SQS body of ``impression``: ``{"impression": {...}}``, compact JSON.

    >>> impression_message(impression)[:40]
    '{"impression":{"recommendation_id":"9f1'
    """
    return f"{_MESSAGE_PREFIX}{pydantic_core.to_json(asdict(impression)).decode()}}}"


def is_impression_message(body: str) -> bool:
    """Whether an SQS body is an impression (else it is an interaction event)."""
    return body.startswith(_MESSAGE_PREFIX)


def parse_impression_message(body: str) -> Impression:
    """The ``Impression`` in an SQS body; ``InvalidImpressionError`` (with pydantic's reasons) when invalid."""
    try:
        message = _Envelope.model_validate_json(body).impression
    except pydantic.ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidImpressionError(f"not a valid impression: {reasons}") from None
    fields = message.model_dump()
    try:
        if message.exploration is not None:
            fields["exploration"] = Exploration(**fields["exploration"])
        return Impression(**fields)
    except ValueError as exc:  # what only the pair of fields can tell (one propensity per item)
        raise InvalidImpressionError(str(exc)) from None


def send_impressions(queue_url: str, impressions: Sequence[Impression]) -> int:
    """Send ``impressions`` to the events queue; returns how many could not be sent (logged, never raised).

    A lost impression costs the bandit one data point; failing the recommendation would cost the user.
    """
    if not impressions:
        return 0
    try:
        failed = len(send_messages(queue_url, [impression_message(i) for i in impressions]).failed)
    except Exception:  # botocore raises many unrelated types; all mean "not sent"
        logger.warning("sending %d impressions failed", len(impressions), exc_info=True)
        return len(impressions)
    if failed:
        logger.warning("%d of %d impressions were not sent", failed, len(impressions))
    return failed


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """The ids of impressions newly stored, and how many impressions' rewards rose (all in ``bandit_arms``)."""

    impressions: tuple[str, ...]
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
    Runs in the caller's transaction (or its own, on an idle connection) at READ COMMITTED; an error
    aborts the caller's transaction (no savepoint: two round trips a batch saved).

    Example::

        >>> record_feedback(conn, [impression], [])
        FeedbackResult(impressions=('9f1c...',), rewarded=0)
        >>> record_feedback(conn, [impression], [])  # a redelivery
        FeedbackResult(impressions=(), rewarded=0)
    """
    unique = sorted({i.recommendation_id: i for i in impressions}.values(), key=lambda i: i.recommendation_id)
    touched = {i.recommendation_id for i in unique}.union(event_recommendation_ids)
    if not touched:
        return FeedbackResult((), 0)
    idle = conn.info.transaction_status == pq.TransactionStatus.IDLE
    with conn.transaction() if idle else contextlib.nullcontext(), conn.cursor() as cur:
        buckets = "{" + ",".join(map(str, lock_buckets(touched))) + "}"
        cur.execute(_LOCK_BUCKETS, [LOCK_NAMESPACE, buckets])
        new: set[str] = set()
        if unique:
            cur.execute(_INSERT_IMPRESSIONS, [pydantic_core.to_json([asdict(i) for i in unique]).decode()])
            new = {row[0] for row in cur.fetchall()}
        cur.execute(_REWARDS_NOW, {"rewards": _REWARDS_JSON, "ids": pydantic_core.to_json(sorted(touched)).decode()})
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
    return FeedbackResult(tuple(sorted(new)), len(raised))


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
