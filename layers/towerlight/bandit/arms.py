"""Bandit arms in Postgres: one row of additive counters per (segment, strategy).

Counters only ever grow by ``n = n + delta`` in an ``INSERT ... ON CONFLICT DO UPDATE``, so any number
of consumers may add at once without losing an update; callers add only what they newly stored
(``towerlight.impressions.record_feedback``), so nothing is counted twice.

Example::

    >>> with conn.transaction():
    ...     add_to_arms(conn, {("warm", "two_tower"): ArmDelta(impressions=2, successes=1, reward_sum=0.5)})
    >>> read_arms(conn)
    [ArmStats(segment='warm', strategy='two_tower', impressions=2, successes=1, reward_sum=0.5)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

_ADD = """
INSERT INTO bandit_arms AS a (segment, strategy, impressions, successes, reward_sum)
SELECT * FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[], %s::float8[])
ON CONFLICT (segment, strategy) DO UPDATE SET
    impressions = a.impressions + EXCLUDED.impressions,
    successes = a.successes + EXCLUDED.successes,
    reward_sum = a.reward_sum + EXCLUDED.reward_sum,
    updated_at = now()
"""
_READ = "SELECT segment, strategy, impressions, successes, reward_sum FROM bandit_arms ORDER BY segment, strategy"


@dataclass(slots=True)
class ArmDelta:
    """What one batch adds to an arm."""

    impressions: int = 0
    successes: int = 0
    reward_sum: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.impressions or self.successes or self.reward_sum)


@dataclass(frozen=True, slots=True)
class ArmStats:
    """An arm's totals: ``reward_sum`` ≤ ``impressions`` (each impression's reward is in [0, 1])."""

    segment: str
    strategy: str
    impressions: int
    successes: int
    reward_sum: float


def add_to_arms(conn: psycopg.Connection, deltas: Mapping[tuple[str, str], ArmDelta]) -> None:
    """Add ``deltas`` to their arms (creating missing arms), in the caller's transaction.

    Rows are written in (segment, strategy) order, so two consumers never wait on each other's arms in
    opposite orders (no deadlock).
    """
    if not deltas:
        return
    keys = sorted(deltas)
    conn.execute(
        _ADD,
        [
            [segment for segment, _ in keys],
            [strategy for _, strategy in keys],
            [deltas[k].impressions for k in keys],
            [deltas[k].successes for k in keys],
            [deltas[k].reward_sum for k in keys],
        ],
    )


def read_arms(conn: psycopg.Connection) -> list[ArmStats]:
    """Every arm's counters, ordered by segment then strategy."""
    return [ArmStats(*row) for row in conn.execute(_READ)]
