"""One simulated policy, round by round, through the real handlers; what it earned against the truth.

A round: a simulated user (the same sequence for every policy) asks recommend's handler for ``k`` items;
the list's expected reward is known (``SimulatedWorld.list_value``), and so is what each fixed strategy
would have shown this user at this moment (the service asked with that strategy: same model, same
Postgres state) and the best list there is (``oracle_value``). The user clicks by their true
probabilities. Every ``drain_every`` rounds the clicks of those rounds go to track's handler with their
response's ``recommendation_id`` (as a batching client sends them; some calls twice, as a client
retrying would), then the queue is drained into ingest's handler, which stores events and impressions
and moves the bandit counters: the next rounds see all of it, as a user's next request sees their
clicks once ingest has run. At the end, what Postgres holds is
read back: the counters and impressions (for the accounting checks) and the logged decisions (for
off-policy evaluation).

Example::

    >>> trace = run_policy(world, functions, Policy("thompson", {...}), users, SimulationConfig(rounds=500))
    >>> trace.value.sum(), trace.fixed["two_tower"].sum()
    (71.2, 69.9)
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from towerlight.bandit.arms import read_arms
from towerlight.db.connection import connect
from towerlight.impressions import logged_decisions
from towerlight.recommend.service import RecommendationService, RecommendQuery, get_service
from towerlight_offline.simulate.stack import Functions
from towerlight_offline.simulate.world import CLICK, CLICK_REWARD, SimulatedWorld

FIXED_STRATEGIES = ("two_tower", "popularity", "content", "hybrid")
MAX_EVENTS_PER_CALL = 100  # what POST /events accepts
Say = Callable[[str], None]


@dataclass(frozen=True)
class Policy:
    """A policy to simulate: recommend's ``auto`` under these environment variables."""

    name: str
    env: Mapping[str, str | None]
    description: str = ""


@dataclass(frozen=True)
class SimulationConfig:
    """Rounds and users of each policy's run (the CLI flags)."""

    rounds: int = 2000
    k: int = 10
    warm_users: int = 400  # simulated users with history (of the world's warm users)
    cold_users: int = 100  # simulated users the service has never seen (of the world's cold users)
    history: int = 50  # past events of each warm user in Postgres at the start
    drain_every: int = 20  # rounds between two drains of the queue into ingest
    duplicate_rate: float = 0.05  # share of click batches the client sends twice
    progress_every: int = 500
    seed: int = 0


@dataclass
class PolicyTrace:
    """Per round: user, segment, strategy served, expected and realized reward; the fixed strategies'
    and the oracle's expected reward on the same request; then what Postgres holds at the end."""

    policy: str
    users: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)  # the bandit's context: warm once Postgres has history
    strategies: list[str] = field(default_factory=list)
    recommendation_ids: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    oracle: list[float] = field(default_factory=list)
    fixed: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in FIXED_STRATEGIES})
    clicks: int = 0  # unique click events sent (retries not counted)
    retried: int = 0  # click events sent a second time
    same_as_fixed: int = 0  # rounds whose list equals the fixed strategy's list of the strategy served
    seconds: float = 0.0
    handler_ms: list[float] = field(default_factory=list)  # recommend's handler, per call
    stored: dict[str, Any] = field(default_factory=dict)  # read back from Postgres at the end
    logged: tuple[list[str], list[str], list[float], list[float]] = ([], [], [], [])

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self.fixed[name] if name in self.fixed else getattr(self, name), dtype=np.float64)


def simulated_users(world: SimulatedWorld, config: SimulationConfig) -> list[str]:
    """The population: ``warm_users`` of the world's warm users and ``cold_users`` of its cold ones."""
    rng = np.random.default_rng(config.seed)
    warm = rng.choice(len(world.warm_users), size=min(config.warm_users, len(world.warm_users)), replace=False)
    cold = rng.choice(len(world.cold_users), size=min(config.cold_users, len(world.cold_users)), replace=False)
    return [world.warm_users[i] for i in sorted(warm)] + [world.cold_users[i] for i in sorted(cold)]


def run_policy(
    world: SimulatedWorld,
    functions: Functions,
    policy: Policy,
    users: Sequence[str],
    seen: Mapping[str, set[str]],
    config: SimulationConfig,
    say: Say = lambda _: None,
) -> PolicyTrace:
    """``config.rounds`` rounds of ``policy`` (its environment already set); ``seen`` is what Postgres holds
    of each user at the start (their positive items). Reads Postgres back at the end."""
    picks = np.random.default_rng(config.seed).integers(0, len(users), config.rounds)  # same for every policy
    rng = np.random.default_rng(config.seed + 7)
    seen = {u: set(items) for u, items in seen.items()}
    pending: dict[str, set[str]] = defaultdict(set)
    clicks: list[dict[str, Any]] = []
    fixed_lists = FixedLists(get_service(), config.k)
    trace = PolicyTrace(policy.name)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    for n, pick in enumerate(picks.tolist(), 1):
        user = users[pick]
        trace.segments.append("warm" if seen.get(user) else "cold")
        before = time.perf_counter()
        body = functions.recommend(user, config.k)
        trace.handler_ms.append((time.perf_counter() - before) * 1000)
        shown = [item["item_id"] for item in body["items"]]
        _record_round(trace, world, user, body, shown, seen.get(user, set()), config.k)
        for strategy, listed in fixed_lists.of(user).items():
            trace.fixed[strategy].append(world.list_value(user, listed))
            trace.same_as_fixed += strategy == body["strategy"] and listed == shown
        clicked = [shown[r] for r in world.clicks(user, shown, rng)]
        trace.reward.append(CLICK_REWARD if clicked else 0.0)
        clicks += _click_events(user, body["recommendation_id"], shown, clicked)
        trace.clicks += len(clicked)
        pending[user].update(clicked)
        if n % config.drain_every == 0 or n == config.rounds:
            trace.retried += _track(functions, clicks, rng, config.duplicate_rate)
            clicks.clear()
            functions.drain()
            for who, items in pending.items():
                if items:
                    seen.setdefault(who, set()).update(items)
                    fixed_lists.forget(who)
            pending.clear()
        if n % config.progress_every == 0 or n == config.rounds:
            say(_progress(trace, n, time.perf_counter() - started))
    functions.drain()  # anything a failed batch left for redelivery
    trace.seconds = time.perf_counter() - started
    _read_back(trace, started_at - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
    return trace


def _record_round(
    trace: PolicyTrace, world: SimulatedWorld, user: str, body: dict[str, Any], shown: list[str], seen: set[str], k: int
) -> None:
    trace.users.append(user)
    trace.strategies.append(body["strategy"])
    trace.recommendation_ids.append(body["recommendation_id"])
    trace.value.append(world.list_value(user, shown))
    trace.oracle.append(world.oracle_value(user, seen, k))


def _click_events(user: str, recommendation_id: str, shown: list[str], clicked: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user,
            "item_id": item,
            "event_type": CLICK,
            "recommendation_id": recommendation_id,
            "context": {"position": shown.index(item) + 1},
        }
        for item in clicked
    ]


def _track(functions: Functions, events: list[dict[str, Any]], rng: np.random.Generator, duplicate_rate: float) -> int:
    """POST the clicks of the last rounds, at most ``MAX_EVENTS_PER_CALL`` per call, as a batching client
    would; some calls are sent twice (the client did not see the 202). Returns the events sent twice."""
    retried = 0
    for start in range(0, len(events), MAX_EVENTS_PER_CALL):
        batch = events[start : start + MAX_EVENTS_PER_CALL]
        functions.track(batch)
        if rng.random() < duplicate_rate:
            functions.track(batch)
            retried += len(batch)
    return retried


class FixedLists:
    """What each fixed strategy shows a user now: the service asked with that strategy (no impression is
    logged for an explicit strategy). Kept until the user's state in Postgres changes (``forget``): the
    service is deterministic for a given model and state, which ``PolicyTrace.same_as_fixed`` checks."""

    def __init__(self, service: RecommendationService, k: int) -> None:
        self.service = service
        self.k = k
        self._lists: dict[str, dict[str, list[str]]] = {}

    def of(self, user: str) -> dict[str, list[str]]:
        if user not in self._lists:
            self._lists[user] = {
                strategy: [i.item_id for i in self.service.recommend(user, RecommendQuery(self.k, strategy)).items]
                for strategy in FIXED_STRATEGIES
            }
        return self._lists[user]

    def forget(self, user: str) -> None:
        self._lists.pop(user, None)


def _progress(trace: PolicyTrace, n: int, seconds: float) -> str:
    best = max(FIXED_STRATEGIES, key=lambda s: sum(trace.fixed[s]))
    shares = Counter(trace.strategies)
    top = ", ".join(f"{s} {c / n:.0%}" for s, c in shares.most_common(3))
    return (
        f"  {trace.policy}: round {n:,} ({n / seconds:.0f}/s) expected reward {sum(trace.value):.1f} "
        f"(best fixed, {best}: {sum(trace.fixed[best]):.1f}; oracle {sum(trace.oracle):.1f}); served {top}"
    )


def _read_back(trace: PolicyTrace, since: datetime, until: datetime) -> None:
    with connect() as conn, conn.transaction():
        arms = read_arms(conn)
        impressions, reward_sum, rewarded = conn.execute(
            "SELECT count(*), coalesce(sum(reward), 0), count(*) FILTER (WHERE reward > 0) FROM impressions"
        ).fetchone()
        clicks, attributed = conn.execute(
            "SELECT count(*) FILTER (WHERE event_type = %s), count(*) FILTER (WHERE recommendation_id IS NOT NULL)"
            " FROM events WHERE ts >= %s",
            [CLICK, since],
        ).fetchone()
        explored = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT greedy), count(DISTINCT model_version) FROM explorations"
        ).fetchone()
        trace.logged = logged_decisions(conn, since, until)
    trace.stored = {
        "arms": [
            {"segment": a.segment, "strategy": a.strategy, "impressions": a.impressions,
             "successes": a.successes, "reward_sum": a.reward_sum}
            for a in arms
        ],
        "impressions": impressions,
        "impressions_rewarded": rewarded,
        "impressions_reward_sum": float(reward_sum),
        "click_events": clicks,
        "attributed_events": attributed,
        "item_decisions": explored[0],  # VW item exploration: decisions stored, of them explored, models used
        "item_decisions_explored": explored[1],
        "item_models_used": explored[2],
    }  # fmt: skip
