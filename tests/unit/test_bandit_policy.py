"""recommend's auto by the strategy bandit: only servable arms, the propensity used, the configuration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from towerlight.bandit.arms import ArmStats
from towerlight.bandit.policy import BANDIT_ENV, REFRESH_ENV, ThompsonAuto, auto_policy
from towerlight.bandit.state import BanditState
from towerlight.bandit.thompson import ThompsonSampling
from towerlight.errors import ConfigurationError
from towerlight.recommend.strategies import BestAvailable

ARMS = [ArmStats("warm", "two_tower", 1000, 50, 30.0), ArmStats("warm", "popularity", 1000, 300, 200.0)]


@dataclass
class User:
    """The part of ``UserContext`` a policy reads: history rows and which strategies can serve."""

    history: np.ndarray
    servable: frozenset[str]

    def can_serve(self, strategy: str) -> bool:
        return strategy in self.servable


def policy() -> ThompsonAuto:
    state = BanditState(ThompsonSampling(("two_tower", "popularity")), lambda: list(ARMS))
    return ThompsonAuto(state, np.random.default_rng(0))


def test_a_warm_user_mostly_gets_the_better_arm_with_its_probability() -> None:
    auto = policy()
    warm = User(np.arange(3), frozenset({"two_tower", "popularity"}))
    choices = [auto.choose(warm) for _ in range(2000)]  # type: ignore[arg-type]
    p = auto.state.probabilities("warm")
    assert np.mean([c.strategy == "popularity" for c in choices]) >= 0.9
    assert all(c.propensity == pytest.approx(p[c.strategy]) for c in choices)


def test_a_user_only_popularity_can_serve_gets_it_with_certainty() -> None:
    cold = User(np.arange(0), frozenset({"popularity"}))
    assert {(c.strategy, c.propensity) for c in (policy().choose(cold) for _ in range(50))} == {("popularity", 1.0)}  # type: ignore[arg-type]


def test_the_bandit_is_configured_by_its_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BANDIT_ENV, raising=False)
    assert isinstance(auto_policy(), BestAvailable)
    monkeypatch.setenv(BANDIT_ENV, "two_tower, popularity")
    assert auto_policy().state.policy.strategies == ("two_tower", "popularity")  # type: ignore[attr-defined]
    monkeypatch.setenv(BANDIT_ENV, "two_tower,random")
    with pytest.raises(ConfigurationError, match="random"):
        auto_policy()


def test_the_counters_are_reused_for_the_configured_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BANDIT_ENV, "two_tower,popularity")
    monkeypatch.delenv(REFRESH_ENV, raising=False)
    assert auto_policy().state.ttl == 30.0  # type: ignore[attr-defined]
    monkeypatch.setenv(REFRESH_ENV, "0")  # every request reads them (the simulator, which ingests in steps)
    assert auto_policy().state.ttl == 0.0  # type: ignore[attr-defined]
    monkeypatch.setenv(REFRESH_ENV, "-1")
    with pytest.raises(ConfigurationError):
        auto_policy()
