"""What a policy's trace shows: reward against the fixed strategies and the oracle, the bandit's traffic on
the best arm, the accounting of Postgres against the simulator, and off-policy estimates against the truth.

Every "true value" here is exact: the expected reward of the lists under the simulator's click model,
summed over the same requests. Regret is against the oracle (the best list for each request).

Example::

    >>> summary = summarize(trace, Policy("thompson", {"TOWERLIGHT_BANDIT_STRATEGIES": "two_tower,popularity"}))
    >>> summary.bandit.best, summary.bandit.share_after
    ('two_tower', 0.91)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from towerlight.bandit.ope import LoggedDecisions, evaluate_policy
from towerlight.bandit.policy import BANDIT_ENV
from towerlight_offline.simulate.run import FIXED_STRATEGIES, Policy, PolicyTrace

WINDOW = 500  # warm requests in the sliding window of the bandit's share on its best arm
SHARE_TARGET = 0.8


@dataclass(frozen=True)
class Check:
    """One accounting identity between what the simulator did and what Postgres holds."""

    name: str
    expected: float
    stored: float

    @property
    def ok(self) -> bool:
        return bool(np.isclose(self.expected, self.stored, rtol=1e-9, atol=1e-6))


@dataclass(frozen=True)
class BanditShare:
    """The strategy bandit on warm requests: its best arm (by true value) and the traffic it got."""

    arms: tuple[str, ...]
    best: str
    true_values: dict[str, float]  # mean expected reward per warm request of always serving each arm
    window: int
    rounds_to_target: int | None  # the round that ends the first window with >= 80% on the best arm
    share_after: float | None  # share on the best arm of the warm requests after that round
    share_last_tenth: float  # ... of the last 10% of warm requests
    share_by_quarter: list[float]  # ... of each quarter of the warm requests, in order
    share_curve: list[tuple[int, float]]  # (round, windowed share) for the plot


@dataclass(frozen=True)
class OpeRow:
    strategy: str
    truth: float
    estimator: str
    value: float
    low: float
    high: float
    effective_n: float

    @property
    def covers(self) -> bool:
        return self.low <= self.truth <= self.high


@dataclass
class PolicySummary:
    policy: str
    description: str
    rounds: int
    expected_reward: float
    realized_reward: float
    oracle_reward: float
    fixed_reward: dict[str, float]
    best_fixed: str
    served: dict[str, float]  # share of requests per strategy served
    rounds_per_second: float
    handler_p50_ms: float
    same_as_fixed: int  # rounds whose list equals what that strategy alone showed (bandit policies: all)
    clicks: int  # unique click events sent through track
    retried: int  # of them, sent a second time
    item_decisions: int  # VW item exploration's decisions stored by ingest (0 when off)
    item_decisions_explored: int  # of them, not the model's best action
    item_models_used: int  # distinct VW model versions that decided (learned online)
    checks: list[Check] = field(default_factory=list)
    bandit: BanditShare | None = None
    ope: list[OpeRow] = field(default_factory=list)

    @property
    def regret(self) -> float:
        return self.oracle_reward - self.expected_reward

    @property
    def beats_best_fixed(self) -> bool:
        return self.expected_reward > self.fixed_reward[self.best_fixed]

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "regret": self.regret,
            "beats_best_fixed": self.beats_best_fixed,
            "checks": [asdict(c) | {"ok": c.ok} for c in self.checks],
            "ope": [asdict(o) | {"covers": o.covers} for o in self.ope],
        }


def summarize(trace: PolicyTrace, policy: Policy, seed: int = 0) -> PolicySummary:
    """The figures of one policy's run (see the module docstring)."""
    rounds = len(trace.value)
    fixed = {s: float(trace.array(s).sum()) for s in FIXED_STRATEGIES}
    summary = PolicySummary(
        policy=policy.name,
        description=policy.description,
        rounds=rounds,
        expected_reward=float(trace.array("value").sum()),
        realized_reward=float(trace.array("reward").sum()),
        oracle_reward=float(trace.array("oracle").sum()),
        fixed_reward=fixed,
        best_fixed=max(fixed, key=fixed.__getitem__),
        served={s: c / rounds for s, c in Counter(trace.strategies).most_common()},
        rounds_per_second=rounds / trace.seconds if trace.seconds else 0.0,
        handler_p50_ms=float(np.median(trace.handler_ms)) if trace.handler_ms else 0.0,
        same_as_fixed=trace.same_as_fixed,
        clicks=trace.clicks,
        retried=trace.retried,
        item_decisions=trace.stored["item_decisions"],
        item_decisions_explored=trace.stored["item_decisions_explored"],
        item_models_used=trace.stored["item_models_used"],
        checks=accounting_checks(trace),
    )
    arms = tuple(s.strip() for s in (policy.env.get(BANDIT_ENV) or "").split(",") if s.strip())
    if arms:
        summary.bandit = bandit_share(trace, arms)
        summary.ope = off_policy_rows(trace, arms, seed)
    return summary


def accounting_checks(trace: PolicyTrace) -> list[Check]:
    """Postgres against the simulator: unique clicks stored once; when impressions are logged, one per
    request, their rewards equal to what the users did, and the bandit counters equal to both."""
    stored = trace.stored
    checks = [Check(f"click events stored ({trace.retried} sent twice)", trace.clicks, stored["click_events"])]
    if not stored["impressions"]:
        return checks
    rewards = trace.array("reward")
    arms = stored["arms"]
    served = Counter(zip(trace.segments, trace.strategies, strict=True))
    checks += [
        Check("impressions stored", len(rewards), stored["impressions"]),
        Check("impressions with a click", int((rewards > 0).sum()), stored["impressions_rewarded"]),
        Check("impression reward sum", float(rewards.sum()), stored["impressions_reward_sum"]),
        Check("bandit impressions", len(rewards), sum(a["impressions"] for a in arms)),
        Check("bandit successes", int((rewards > 0).sum()), sum(a["successes"] for a in arms)),
        Check("bandit reward sum", float(rewards.sum()), sum(a["reward_sum"] for a in arms)),
    ]
    checks += [
        Check(f"bandit impressions {a['segment']}/{a['strategy']}", served[(a["segment"], a["strategy"])],
              a["impressions"])
        for a in arms
    ]  # fmt: skip
    return checks


def bandit_share(trace: PolicyTrace, arms: tuple[str, ...]) -> BanditShare:
    """How much of the warm traffic (where the bandit had a choice) went to the arm of highest true value."""
    warm = np.flatnonzero(np.asarray(trace.segments) == "warm")
    truth = {s: float(trace.array(s)[warm].mean()) if len(warm) else 0.0 for s in arms}
    best = max(truth, key=truth.__getitem__)
    on_best = (np.asarray(trace.strategies)[warm] == best).astype(np.float64)
    window = max(1, min(WINDOW, len(warm) // 5))
    shares = np.convolve(on_best, np.ones(window) / window, mode="valid") if len(warm) >= window else np.array([])
    reached = np.flatnonzero(shares >= SHARE_TARGET)
    rounds_to_target = share_after = None
    if len(reached):
        end = int(reached[0]) + window - 1  # index in ``warm`` of the window's last request
        rounds_to_target = int(warm[end]) + 1
        after = on_best[end + 1 :]
        share_after = float(after.mean()) if len(after) else None
    step = max(1, len(shares) // 200)
    return BanditShare(
        arms=arms,
        best=best,
        true_values=truth,
        window=window,
        rounds_to_target=rounds_to_target,
        share_after=share_after,
        share_last_tenth=float(on_best[-max(1, len(on_best) // 10) :].mean()) if len(on_best) else 0.0,
        share_by_quarter=[float(q.mean()) if len(q) else 0.0 for q in np.array_split(on_best, 4)],
        share_curve=[(int(warm[i + window - 1]) + 1, float(shares[i])) for i in range(0, len(shares), step)],
    )


def off_policy_rows(trace: PolicyTrace, arms: tuple[str, ...], seed: int = 0) -> list[OpeRow]:
    """IPS, SNIPS and DR of "always this arm" from the warm impressions Postgres logged, beside the truth:
    the mean expected reward of that arm's lists on the same warm requests."""
    segments, strategies, propensities, rewards = trace.logged
    keep = [n for n, segment in enumerate(segments) if segment == "warm"]
    if not keep:
        return []
    logs = LoggedDecisions.from_columns(
        [segments[n] for n in keep],
        [strategies[n] for n in keep],
        [propensities[n] for n in keep],
        [rewards[n] for n in keep],
        action_names=arms,
    )
    warm = np.asarray(trace.segments) == "warm"
    rows = []
    for strategy in arms:
        truth = float(trace.array(strategy)[warm].mean())
        target = logs.policy_table({}, default={strategy: 1.0})
        rows += [
            OpeRow(strategy, truth, e.estimator, e.value, e.low, e.high, e.effective_n)
            for e in evaluate_policy(logs, target, seed=seed)
        ]
    return rows
