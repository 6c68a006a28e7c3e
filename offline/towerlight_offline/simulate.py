"""A strategy-bandit simulator on the real online-learning path, with users whose true preferences are known.

Each round a synthetic user of a segment asks for a recommendation; ``ThompsonAuto``'s state (Thompson
sampling over Postgres counters, refreshed every ``refresh`` rounds like recommend's cache) picks the
strategy; the user clicks with that (segment, strategy)'s true probability. Impressions and clicks go
through the ingest write path (``insert_events`` + ``record_feedback``, one transaction per batch), so
the counters the bandit reads are the ones production would hold. Afterwards the logged impressions are
used for off-policy evaluation of each fixed strategy, whose true value is known here.

What it does not drive (yet): the recommend and ingest handlers themselves, item-level choices (the
user's click depends on the strategy only), Vowpal Wabbit exploration.

Example::

    >>> world = World({"cold": 0.3, "warm": 0.7}, {("warm", "two_tower"): 0.12, ...})
    >>> result = simulate(conn, world, rounds=5000)
    >>> result.best_share_last, result.regret
    (0.93, 41.5)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from towerlight.bandit.arms import read_arms
from towerlight.bandit.ope import Estimate, LoggedDecisions, evaluate_policy
from towerlight.bandit.state import BanditState
from towerlight.bandit.thompson import ThompsonSampling
from towerlight.db.events import EventRow, insert_events
from towerlight.event_types import EVENT_TYPES
from towerlight.impressions import Impression, logged_decisions, record_feedback

CLICK = "click"


@dataclass(frozen=True)
class World:
    """Segment shares and each (segment, strategy)'s true click probability."""

    segments: Mapping[str, float]
    click_rates: Mapping[tuple[str, str], float]

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(sorted({s for _, s in self.click_rates}))

    def value(self, strategy: str) -> float:
        """The expected reward per request of always serving ``strategy``."""
        reward = EVENT_TYPES[CLICK].reward
        total = sum(self.segments.values())
        return sum(share / total * self.click_rates[(seg, strategy)] * reward for seg, share in self.segments.items())

    def best_strategy(self, segment: str) -> str:
        return max(self.strategies, key=lambda s: self.click_rates[(segment, s)])


DEFAULT_WORLD = World(
    {"cold": 0.3, "warm": 0.7},
    {
        ("cold", "two_tower"): 0.04,
        ("cold", "content"): 0.05,
        ("cold", "popularity"): 0.08,
        ("warm", "two_tower"): 0.12,
        ("warm", "content"): 0.07,
        ("warm", "popularity"): 0.05,
    },
)


@dataclass
class SimulationResult:
    """What happened: per-round choices, rewards, regret, and OPE of each fixed strategy against the truth."""

    rounds: int
    thompson_reward: float  # realized (clicks × click reward)
    thompson_expected: float  # expected, from the true click rate of each strategy served
    fixed_reward: dict[str, float]  # expected cumulative reward of always serving one strategy
    regret: float  # expected reward lost against the best strategy of each user's segment
    best_share_last: float  # share of the last 10% of rounds served the segment's best strategy
    rounds_to_80: int | None  # first round after which a 500-round window put >= 80% on the best
    ope: dict[str, tuple[float, list[Estimate]]] = field(default_factory=dict)  # strategy: (truth, estimates)


def simulate(
    conn: psycopg.Connection,
    world: World = DEFAULT_WORLD,
    *,
    rounds: int = 5000,
    refresh: int = 100,
    exploration: float = 0.05,
    seed: int = 0,
) -> SimulationResult:
    """Run ``rounds`` requests through the bandit and the ingest write path on ``conn`` (an empty schema)."""
    rng = np.random.default_rng(seed)
    strategies = world.strategies
    segments = list(world.segments)
    shares = np.array([world.segments[s] for s in segments], dtype=float)
    clock = [0.0]

    def read() -> list:
        with conn.transaction():
            return read_arms(conn)

    state = BanditState(
        ThompsonSampling(strategies, exploration=exploration), read, ttl=refresh, clock=lambda: clock[0]
    )
    reward = EVENT_TYPES[CLICK].reward
    start = datetime.now(UTC) - timedelta(days=1)
    on_best, gained, expected, lost = [], 0.0, 0.0, 0.0
    for first in range(0, rounds, refresh):
        impressions, clicks = [], []
        for n in range(first, min(first + refresh, rounds)):
            clock[0] = float(n)
            segment = segments[int(rng.choice(len(segments), p=shares / shares.sum()))]
            choice = state.choose(segment, rng)
            rate = world.click_rates[(segment, choice.strategy)]
            best = world.click_rates[(segment, world.best_strategy(segment))]
            on_best.append(rate == best)
            expected += rate * reward
            lost += (best - rate) * reward
            rec = str(uuid.uuid4())
            ts = start + timedelta(seconds=n)
            impressions.append(
                Impression(rec, f"u{n}", segment, choice.strategy, "sim", ("item",), choice.propensity, ts)
            )
            if rng.random() < rate:
                gained += reward
                clicks.append(EventRow(str(uuid.uuid4()), f"u{n}", "item", CLICK, None, ts, rec))
        with conn.transaction():
            insert_events(conn, clicks)
            record_feedback(conn, impressions, [c.recommendation_id for c in clicks if c.recommendation_id])
    window = np.convolve(np.asarray(on_best, dtype=float), np.ones(500) / 500, mode="valid")
    reached = np.flatnonzero(window >= 0.8)
    result = SimulationResult(
        rounds=rounds,
        thompson_reward=gained,
        thompson_expected=expected,
        fixed_reward={s: world.value(s) * rounds for s in strategies},
        regret=lost,
        best_share_last=float(np.mean(on_best[-max(1, rounds // 10) :])),
        rounds_to_80=int(reached[0] + 500) if len(reached) else None,
    )
    with conn.transaction():
        columns = logged_decisions(conn, start - timedelta(seconds=1), start + timedelta(seconds=rounds + 1))
    logs = LoggedDecisions.from_columns(*columns, action_names=strategies)
    for strategy in strategies:
        target = logs.policy_table({}, default={strategy: 1.0})
        result.ope[strategy] = (world.value(strategy), evaluate_policy(logs, target, seed=seed))
    return result
