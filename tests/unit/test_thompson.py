"""Thompson sampling over strategies: known posterior answers, exact logged propensities, the counter cache."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from towerlight.bandit.arms import ArmStats
from towerlight.bandit.state import BanditState, user_segment
from towerlight.bandit.thompson import ThompsonSampling, choice_probabilities

STRATEGIES = ("two_tower", "popularity", "content")


def test_choice_probabilities_match_a_closed_form_answer() -> None:
    # GIVEN Beta(2, 1) against Beta(1, 1), where P(X > Y) = ∫ 2x · x dx = 2/3
    # WHEN estimating each arm's chance of the highest draw
    p = choice_probabilities([1, 0], [1, 0], draws=40_000)
    # THEN the estimate is within four standard errors of 2/3, and the two sum to one
    assert p[0] == pytest.approx(2 / 3, abs=4 * np.sqrt(2 / 9 / 40_000))
    assert p.sum() == pytest.approx(1.0)


def test_arms_without_data_are_equally_likely() -> None:
    p = choice_probabilities([0, 0, 0, 0], [0, 0, 0, 0], draws=40_000)
    assert p == pytest.approx(np.full(4, 0.25), abs=4 * np.sqrt(0.25 * 0.75 / 40_000))


def test_the_same_counters_always_give_the_same_probabilities() -> None:
    assert choice_probabilities([3, 5], [40, 40]).tolist() == choice_probabilities([3, 5], [40, 40]).tolist()


@pytest.mark.parametrize(("sums", "trials"), [([1.0], [0]), ([-1.0], [3]), ([1.0, 2.0], [3]), ([], [])])
def test_inconsistent_counters_are_refused(sums: list[float], trials: list[int]) -> None:
    with pytest.raises(ValueError):
        choice_probabilities(sums, trials)


def test_a_dominant_arm_gets_most_of_the_traffic_and_every_arm_keeps_a_floor() -> None:
    # GIVEN a segment where two_tower earns twice the reward of the others, over 2000 impressions each
    arms = [
        ArmStats("warm", "two_tower", 2000, 400, 240.0),
        ArmStats("warm", "popularity", 2000, 200, 120.0),
        ArmStats("warm", "content", 2000, 150, 110.0),
        ArmStats("cold", "popularity", 10, 10, 10.0),  # another segment: must not matter
    ]
    policy = ThompsonSampling(STRATEGIES, exploration=0.06)
    # WHEN the policy sets its probabilities, then chooses for 10 000 requests
    p = policy.probabilities(arms, "warm")
    rng = np.random.default_rng(1)
    choices = [policy.choose(p, rng) for _ in range(10_000)]
    # THEN two_tower gets at least 80% of draws; the others keep at least ε / K
    share = sum(c.strategy == "two_tower" for c in choices) / len(choices)
    assert share >= 0.8
    assert min(p.values()) >= 0.06 / 3
    assert sum(p.values()) == pytest.approx(1.0)
    # AND the propensity logged with each choice is the probability the policy used for it
    assert all(c.propensity == pytest.approx(p[c.strategy]) for c in choices[:100])


def test_thompson_finds_the_best_of_three_bernoulli_strategies() -> None:
    # GIVEN three strategies with true success rates 4%, 10% and 6%, counters refreshed every 50 requests
    true_rates = np.array([0.04, 0.10, 0.06])
    rng = np.random.default_rng(3)
    policy = ThompsonSampling(STRATEGIES)
    trials, sums = np.zeros(3), np.zeros(3)
    chosen = []
    # WHEN serving 4000 requests and learning from their outcomes
    for _ in range(4000 // 50):
        arms = [ArmStats("warm", s, int(n), int(r), r) for s, n, r in zip(STRATEGIES, trials, sums, strict=True)]
        p = policy.probabilities(arms, "warm")
        for _ in range(50):
            arm = STRATEGIES.index(policy.choose(p, rng).strategy)
            trials[arm] += 1
            sums[arm] += rng.random() < true_rates[arm]
            chosen.append(arm)
    # THEN over the last 1000 requests at least 80% went to the best strategy
    assert np.mean(np.array(chosen[-1000:]) == 1) >= 0.8


def test_a_choice_among_the_strategies_a_user_allows_reports_the_renormalized_probability() -> None:
    # GIVEN probabilities over three strategies, for a user only popularity and content can serve
    policy = ThompsonSampling(STRATEGIES)
    p = {"two_tower": 0.7, "popularity": 0.2, "content": 0.1}
    rng = np.random.default_rng(4)
    # WHEN choosing many times
    choices = [policy.choose(p, rng, allowed={"popularity", "content"}) for _ in range(6000)]
    # THEN two_tower never comes up, and popularity comes up with its renormalized probability 2/3
    assert {c.strategy for c in choices} == {"popularity", "content"}
    assert all(c.propensity == pytest.approx(2 / 3) for c in choices if c.strategy == "popularity")
    share = sum(c.strategy == "popularity" for c in choices) / len(choices)
    assert share == pytest.approx(2 / 3, abs=4 * np.sqrt(2 / 9 / 6000))
    with pytest.raises(ValueError, match="allowed"):
        policy.choose(p, rng, allowed={"hybrid"})
    # AND allowed arms that never won a draw (no exploration) are chosen uniformly, never with zero probability
    never = {"two_tower": 1.0, "popularity": 0.0, "content": 0.0}
    fallback = {policy.choose(never, rng, allowed={"popularity", "content"}) for _ in range(200)}
    assert {(c.strategy, c.propensity) for c in fallback} == {("popularity", 0.5), ("content", 0.5)}


class Counters:
    """An in-memory source of arm counters that can be made to fail, counting its reads."""

    def __init__(self, arms: list[ArmStats]) -> None:
        self.arms = arms
        self.reads = 0
        self.down = False

    def __call__(self) -> list[ArmStats]:
        self.reads += 1
        if self.down:
            raise psycopg.OperationalError("server closed the connection")
        return list(self.arms)


def test_counters_are_read_once_per_ttl_and_kept_when_the_database_fails() -> None:
    # GIVEN a bandit state over counters where two_tower dominates, on a manual clock
    now = [0.0]
    counters = Counters([ArmStats("warm", "two_tower", 500, 100, 100.0), ArmStats("warm", "popularity", 500, 5, 5.0)])
    state = BanditState(ThompsonSampling(STRATEGIES[:2]), counters, ttl=30, retry_after=5, clock=lambda: now[0])
    # WHEN asked many times within the ttl
    first = state.probabilities("warm")
    for _ in range(100):
        state.choose("warm", np.random.default_rng(0))
    # THEN the counters were read once
    assert counters.reads == 1 and first["two_tower"] > 0.9
    # WHEN the database fails after the ttl
    counters.down = True
    now[0] = 31.0
    # THEN the last counters stay in use, and the next read waits retry_after seconds
    assert state.probabilities("warm") == first
    now[0] = 33.0
    state.probabilities("warm")
    assert counters.reads == 2
    # WHEN the database is back with popularity now ahead
    counters.down = False
    counters.arms = [ArmStats("warm", "two_tower", 500, 5, 5.0), ArmStats("warm", "popularity", 500, 100, 100.0)]
    now[0] = 36.5
    # THEN the probabilities follow
    assert state.probabilities("warm")["popularity"] > 0.9


def test_without_any_counters_the_choice_is_uniform() -> None:
    state = BanditState(ThompsonSampling(STRATEGIES), Counters([]))
    assert state.probabilities(user_segment(0)) == pytest.approx(dict.fromkeys(STRATEGIES, 1 / 3), abs=0.03)
