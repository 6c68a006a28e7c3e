"""Exploration decisions: what recommend logs with an impression, and the ``explorations`` table ingest fills.

An ``Exploration`` is one slot decision: the VW features of the user and of each candidate, the one chosen,
and the probability it was chosen with (the PMF entry actually sampled). It travels inside the impression
(``{"impression": {..., "exploration": {...}}}``) and is stored once per recommendation, in the impression's
transaction, so the learner sees exactly the examples the policy acted on.

Its reward is the best reward (``event_types.py``) of the events attributed to the recommendation for the
chosen item: clicks on the other items of the page are not this decision's doing.

Example::

    >>> with conn.transaction():
    ...     record_explorations(conn, impressions)
    1
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from towerlight.event_types import EVENT_TYPES

if TYPE_CHECKING:
    from towerlight.impressions import Impression

MAX_ACTIONS = 100
MAX_FEATURE_CHARS = 8192

_REWARD_TYPES = [name for name, t in EVENT_TYPES.items() if t.reward > 0]
_REWARD_VALUES = [EVENT_TYPES[name].reward for name in _REWARD_TYPES]
# The reward of exploration x: the best attributed event for the chosen item (0 without any).
REWARD_OF_CHOSEN = """
coalesce((SELECT max(w.reward) FROM events e
          JOIN unnest(%(reward_types)s::text[], %(reward_values)s::float8[]) AS w(event_type, reward) USING (event_type)
          WHERE e.recommendation_id = x.recommendation_id AND e.item_id = x.item_id), 0)
"""
REWARD_PARAMETERS = {"reward_types": _REWARD_TYPES, "reward_values": _REWARD_VALUES}

_INSERT = """
INSERT INTO explorations (recommendation_id, slot, item_id, chosen, probability, greedy, shared, actions,
                          model_version, created_at)
SELECT recommendation_id, slot, item_id, chosen, probability, greedy, shared, actions, model_version, created_at
FROM jsonb_to_recordset(%s::jsonb) AS x(
    recommendation_id text, slot int, item_id text, chosen int, probability float8, greedy bool, shared text,
    actions text[], model_version text, created_at timestamptz)
ORDER BY recommendation_id
ON CONFLICT (recommendation_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Exploration:
    """One slot decision: ``actions[chosen]`` (item ``item_id``) was shown at ``slot`` with ``probability``.

    ``greedy`` says the model's best action was the one sampled (exploited rather than explored);
    ``model_version`` is the VW model that decided (None: none was learned yet, the ranked order led).
    """

    slot: int
    item_id: str
    chosen: int
    probability: float
    greedy: bool
    shared: str
    actions: tuple[str, ...]
    model_version: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.probability <= 1.0:
            raise ValueError("exploration probability must be in (0, 1]")
        if not 0 <= self.chosen < len(self.actions):
            raise ValueError("the chosen action must be one of the actions")
        if self.slot < 1:
            raise ValueError("the slot is a 1-based position")


_Feature = Annotated[str, Field(min_length=1, max_length=MAX_FEATURE_CHARS)]


class ExplorationMessage(BaseModel):
    """An ``Exploration`` as it travels inside an impression message (validated again by ingest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot: Annotated[int, Field(ge=1, le=MAX_ACTIONS)]
    item_id: Annotated[str, Field(min_length=1, max_length=256)]
    chosen: Annotated[int, Field(ge=0, lt=MAX_ACTIONS)]
    probability: Annotated[float, Field(gt=0, le=1)]
    greedy: bool
    shared: _Feature
    actions: Annotated[tuple[_Feature, ...], Field(min_length=1, max_length=MAX_ACTIONS)]
    model_version: Annotated[str, Field(min_length=1, max_length=256)] | None = None


def record_explorations(conn: psycopg.Connection, impressions: Sequence[Impression]) -> int:
    """Store the explorations of ``impressions`` (each once: a redelivery adds nothing); returns how many are new.

    Runs in the caller's transaction, the one that stores the impressions.
    """
    rows = [
        {
            "recommendation_id": i.recommendation_id,
            "created_at": i.created_at.isoformat(),
            **asdict(i.exploration),
        }
        for i in impressions
        if i.exploration is not None
    ]
    if not rows:
        return 0
    return conn.execute(_INSERT, [json.dumps(rows)]).rowcount


def window_summary(conn: psycopg.Connection, since: datetime, until: datetime) -> list[tuple[bool, int, float, float]]:
    """Per ``greedy`` (exploited, explored): decisions created in ``[since, until)``, mean and sd of reward."""
    query = f"""
    SELECT x.greedy, count(*), avg(r.reward), coalesce(stddev_samp(r.reward), 0)
    FROM explorations x CROSS JOIN LATERAL (SELECT {REWARD_OF_CHOSEN} AS reward) r
    WHERE x.created_at >= %(since)s AND x.created_at < %(until)s
    GROUP BY x.greedy ORDER BY x.greedy
    """
    return [tuple(row) for row in conn.execute(query, {**REWARD_PARAMETERS, "since": since, "until": until})]
