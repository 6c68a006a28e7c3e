"""Off-policy evaluation against synthetic logs whose candidate policy's true value is known."""

from __future__ import annotations

import numpy as np
import pytest

from towerlight.bandit.ope import LoggedDecisions, evaluate_policy, unsupported_mass

SEGMENTS = ("a", "b", "c")
STRATEGIES = ("content", "popularity", "two_tower")
SEGMENT_SHARE = np.array([0.5, 0.3, 0.2])
# True success rate of each strategy in each segment, and how the logging policy chose strategies.
TRUE_RATES = np.array([[0.10, 0.30, 0.20], [0.40, 0.10, 0.20], [0.05, 0.10, 0.30]])
LOGGING = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
# The candidate: the best strategy of each segment, always. True value: .5 × .3 + .3 × .4 + .2 × .3 = 0.33
BEST = {s: {STRATEGIES[int(np.argmax(TRUE_RATES[i]))]: 1.0} for i, s in enumerate(SEGMENTS)}
TRUE_VALUE = float(SEGMENT_SHARE @ TRUE_RATES.max(axis=1))


def logged(n: int, rng: np.random.Generator, logging: np.ndarray = LOGGING) -> LoggedDecisions:
    """n decisions of the logging policy with Bernoulli rewards at TRUE_RATES."""
    x = rng.choice(len(SEGMENTS), size=n, p=SEGMENT_SHARE)
    a = (rng.random(n)[:, None] > np.cumsum(logging[x], axis=1)).sum(axis=1)
    rewards = (rng.random(n) < TRUE_RATES[x, a]).astype(float)
    return LoggedDecisions.from_columns(
        [SEGMENTS[i] for i in x], [STRATEGIES[i] for i in a], logging[x, a], rewards, action_names=STRATEGIES
    )


def covers(estimate_low: float, estimate_high: float) -> bool:
    return estimate_low <= TRUE_VALUE <= estimate_high


@pytest.mark.parametrize("interval", ["clt", "bootstrap"])
def test_every_estimate_covers_the_true_value(interval: str) -> None:
    # GIVEN 20 000 decisions logged by a policy that rarely plays the best strategy
    logs = logged(20_000, np.random.default_rng(11))
    # WHEN evaluating "always the best strategy of the segment"
    estimates = evaluate_policy(logs, logs.policy_table(BEST), interval=interval, resamples=400)
    # THEN each 95% interval contains the true value 0.33, and is informative
    assert [e.estimator for e in estimates] == ["ips", "snips", "dr"]
    for e in estimates:
        assert covers(e.low, e.high), e
        assert e.high - e.low < 0.05, e
        assert e.low <= e.value <= e.high


def test_intervals_reach_their_nominal_coverage_over_repeated_logs() -> None:
    # GIVEN 300 independent logs of 3000 decisions each
    rng = np.random.default_rng(5)
    hits = {"ips": 0, "snips": 0, "dr": 0}
    for _ in range(300):
        logs = logged(3000, rng)
        for e in evaluate_policy(logs, logs.policy_table(BEST), seed=int(rng.integers(1 << 31))):
            hits[e.estimator] += covers(e.low, e.high)
    # THEN each 95% CLT interval covered the truth about 95% of the time (binomial sd ≈ 1.3 points)
    assert all(0.91 <= h / 300 <= 0.99 for h in hits.values()), hits


def test_on_policy_ips_and_snips_are_the_mean_reward() -> None:
    # GIVEN logs where the candidate is the logging policy itself (every weight is 1)
    logs = logged(5000, np.random.default_rng(2))
    same = {s: dict(zip(STRATEGIES, LOGGING[i].tolist(), strict=True)) for i, s in enumerate(SEGMENTS)}
    estimates = {e.estimator: e for e in evaluate_policy(logs, logs.policy_table(same))}
    # THEN IPS and SNIPS are exactly the observed mean reward, with every decision effective
    assert estimates["ips"].value == pytest.approx(logs.rewards.mean())
    assert estimates["snips"].value == pytest.approx(logs.rewards.mean())
    assert estimates["ips"].effective_n == pytest.approx(5000)


def test_doubly_robust_is_tighter_than_ips_when_its_reward_model_is_good() -> None:
    logs = logged(20_000, np.random.default_rng(3))
    by_name = {e.estimator: e for e in evaluate_policy(logs, logs.policy_table(BEST))}
    assert by_name["dr"].high - by_name["dr"].low < by_name["ips"].high - by_name["ips"].low


def test_choices_the_logs_never_saw_are_reported_as_unsupported() -> None:
    # GIVEN logs where segment "c" was only ever served two_tower
    logging = LOGGING.copy()
    logging[2] = [0.0, 0.0, 1.0]
    logs = logged(4000, np.random.default_rng(4), logging)
    # WHEN the candidate serves content in "c"
    target = logs.policy_table({**BEST, "c": {"content": 1.0}})
    # THEN its whole share of "c" decisions is unsupported; the "best" candidate is fully supported
    assert unsupported_mass(logs, target) == pytest.approx(np.mean(logs.contexts == 2))
    assert unsupported_mass(logs, logs.policy_table(BEST)) == 0.0


def test_bad_inputs_are_refused_with_a_reason() -> None:
    logs = logged(100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sum to"):
        logs.policy_table({"a": {"content": 0.5}}, default={"content": 1.0})
    with pytest.raises(ValueError, match="not among"):
        logs.policy_table({}, default={"random": 1.0})
    with pytest.raises(ValueError, match="propensity"):
        LoggedDecisions.from_columns(["a"], ["content"], [0.0], [1.0])
    with pytest.raises(ValueError, match="must be 3 × 3"):
        evaluate_policy(logs, np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="no logged decisions"):
        LoggedDecisions.from_columns([], [], [], [])
