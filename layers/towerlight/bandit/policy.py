"""recommend's ``auto`` chosen by the strategy bandit: Thompson sampling per segment, behind ``StrategyPolicy``.

On when ``TOWERLIGHT_BANDIT_STRATEGIES`` names the arms (e.g. ``two_tower,content,popularity``); else
``auto`` keeps ``BestAvailable``. ``TOWERLIGHT_BANDIT_REFRESH_SECONDS`` (default 30) is how long the arm
counters read from Postgres are reused. A user is offered only the arms their model and history can serve (a
user without history: popularity alone, propensity 1), and the propensity returned is the probability
the choice was made with among those arms: what the impression logs for off-policy evaluation.

Example::

    >>> policy = auto_policy()  # with TOWERLIGHT_BANDIT_STRATEGIES=two_tower,popularity
    >>> policy.choose(context)
    StrategyChoice(strategy='two_tower', variant=None, propensity=0.975)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from towerlight.bandit.state import DEFAULT_TTL_SECONDS, BanditState, user_segment
from towerlight.bandit.thompson import ThompsonSampling
from towerlight.config import env_number
from towerlight.errors import ConfigurationError
from towerlight.recommend.strategies import BestAvailable, StrategyChoice, StrategyPolicy, UserContext

BANDIT_ENV = "TOWERLIGHT_BANDIT_STRATEGIES"
REFRESH_ENV = "TOWERLIGHT_BANDIT_REFRESH_SECONDS"
ARMS = ("two_tower", "content", "popularity")


@dataclass
class ThompsonAuto:
    """``StrategyPolicy`` by Thompson sampling over ``state``'s strategies, per ``user_segment``."""

    state: BanditState
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    @property
    def arms(self) -> tuple[str, ...]:
        """The strategies it may choose: the service prepares each of them for ``auto`` requests."""
        return self.state.policy.strategies

    def choose(self, context: UserContext) -> StrategyChoice:
        allowed = [s for s in self.arms if context.can_serve(s)]
        if not allowed:  # none of the arms can serve this user: popularity always can, outside the bandit
            return StrategyChoice("popularity")
        arm = self.state.choose(user_segment(len(context.history)), self.rng, allowed)
        return StrategyChoice(arm.strategy, propensity=arm.propensity)


def auto_policy() -> StrategyPolicy:
    """The policy of ``auto`` requests: ``ThompsonAuto`` when ``TOWERLIGHT_BANDIT_STRATEGIES`` is set."""
    raw = os.environ.get(BANDIT_ENV, "").strip()
    if not raw:
        return BestAvailable()
    arms = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or not arms:
        raise ConfigurationError(f"{BANDIT_ENV}: {unknown or raw!r} not among the arms {list(ARMS)}")
    ttl = env_number(REFRESH_ENV, DEFAULT_TTL_SECONDS, 0.0)
    return ThompsonAuto(BanditState(ThompsonSampling(arms), ttl=ttl))
