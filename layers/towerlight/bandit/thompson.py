"""Thompson sampling over strategies, per segment, with the exact probability of each choice.

Each arm's reward rate has a Beta posterior from its counters: Beta(1 + reward_sum, 1 + impressions -
reward_sum) (rewards are in [0, 1]; a graded reward counts as a fractional success). Thompson sampling
picks the arm whose posterior draw is highest, i.e. each arm with its probability of being the best.
``choice_probabilities`` estimates those probabilities once per counter refresh (Monte Carlo over
posterior draws, seeded, so the same counters always give the same numbers); ``ThompsonSampling`` then
samples the strategy from them, mixed with a little uniform exploration. The propensity it logs is
therefore the probability the policy actually used, not an estimate of it, and never zero (which
off-policy evaluation needs).

Example::

    >>> policy = ThompsonSampling(("two_tower", "popularity"))
    >>> arms = [ArmStats("warm", "two_tower", 1000, 120, 95.0), ArmStats("warm", "popularity", 1000, 60, 41.0)]
    >>> policy.probabilities(arms, "warm")
    {'two_tower': 0.975, 'popularity': 0.025}
    >>> policy.choose(policy.probabilities(arms, "warm"), np.random.default_rng(0))
    ArmChoice(strategy='two_tower', propensity=0.975)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from towerlight.bandit.arms import ArmStats

# Posterior draws per arm for the choice probabilities: a standard error of at most 0.008.
DEFAULT_DRAWS = 4000
# Share of traffic spread uniformly over all arms, so every arm keeps a propensity ≥ exploration / K.
DEFAULT_EXPLORATION = 0.05
PRIOR_SUCCESSES = 1.0
PRIOR_FAILURES = 1.0
# Monte Carlo draws are seeded: a given set of counters always yields the same probabilities.
DRAWS_SEED = 20_261_130


@dataclass(frozen=True, slots=True)
class ArmChoice:
    """The strategy to serve and the probability with which it was chosen."""

    strategy: str
    propensity: float


def choice_probabilities(
    reward_sums: Sequence[float] | np.ndarray,
    trials: Sequence[float] | np.ndarray,
    *,
    draws: int = DEFAULT_DRAWS,
    seed: int = DRAWS_SEED,
) -> np.ndarray:
    """Each arm's probability of having the highest Beta posterior draw (Thompson's choice), estimated.

    >>> choice_probabilities([1, 0], [1, 0], draws=100_000).round(2)  # Beta(2, 1) vs Beta(1, 1): 2/3
    array([0.67, 0.33])
    """
    successes = np.asarray(reward_sums, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if successes.shape != n.shape or successes.ndim != 1 or len(n) == 0:
        raise ValueError("reward_sums and trials must be non-empty 1-D sequences of the same length")
    if np.any(successes < 0) or np.any(successes > n):
        raise ValueError("every reward sum must be between 0 and its number of trials")
    rng = np.random.default_rng(seed)
    alpha = PRIOR_SUCCESSES + successes
    beta = PRIOR_FAILURES + n - successes
    samples = rng.beta(alpha[:, None], beta[:, None], size=(len(n), draws))
    wins = np.bincount(samples.argmax(axis=0), minlength=len(n))
    return wins / draws


class ThompsonSampling:
    """Thompson sampling over a fixed set of strategies, separately for each segment.

    ``exploration`` (0 ≤ ε < 1) mixes in the uniform choice: p = (1 - ε) · p_thompson + ε / K.
    """

    def __init__(
        self,
        strategies: Sequence[str],
        *,
        exploration: float = DEFAULT_EXPLORATION,
        draws: int = DEFAULT_DRAWS,
    ) -> None:
        if len(strategies) == 0 or len(set(strategies)) != len(strategies):
            raise ValueError(f"strategies must be distinct and at least one, got {list(strategies)}")
        if not 0.0 <= exploration < 1.0:
            raise ValueError(f"exploration must be in [0, 1), got {exploration}")
        self.strategies = tuple(strategies)
        self.exploration = exploration
        self.draws = draws

    def probabilities(self, arms: Iterable[ArmStats], segment: str) -> dict[str, float]:
        """The probability of serving each strategy to a user of ``segment``; arms never played count as new.

        Counters of strategies outside ``self.strategies`` are ignored.
        """
        counters = {a.strategy: a for a in arms if a.segment == segment}
        empty = ArmStats(segment, "", 0, 0, 0.0)
        chosen = [counters.get(s, empty) for s in self.strategies]
        # A reward sum above its count would be corrupt data; clip rather than fail a request on it.
        trials = [a.impressions for a in chosen]
        sums = [min(a.reward_sum, a.impressions) for a in chosen]
        thompson = choice_probabilities(sums, trials, draws=self.draws)
        mixed = (1.0 - self.exploration) * thompson + self.exploration / len(self.strategies)
        return dict(zip(self.strategies, mixed.tolist(), strict=True))

    @staticmethod
    def choose(
        probabilities: Mapping[str, float], rng: np.random.Generator, allowed: Collection[str] | None = None
    ) -> ArmChoice:
        """Sample one strategy from ``probabilities`` (as returned by ``probabilities``); never a zero one.

        With ``allowed`` (the strategies this user can be served by), the others are left out and the
        rest renormalized: the propensity returned is still the probability the choice was made with.
        """
        names = [name for name in probabilities if allowed is None or name in allowed]
        if not names:
            raise ValueError(f"none of {list(probabilities)} is allowed")
        weights = np.fromiter((probabilities[name] for name in names), dtype=np.float64, count=len(names))
        if weights.sum() <= 0.0:  # without exploration, no allowed arm may ever have won a draw
            weights = np.ones(len(names))
        cumulative = np.cumsum(weights)
        # Inverse CDF by hand (Generator.choice(p=...) validates p on every call): with u < total,
        # cumulative[index - 1] <= u < cumulative[index], so the arm drawn has a positive weight.
        index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        index = min(index, len(names) - 1)  # u == total only through rounding of the product
        return ArmChoice(names[index], float(weights[index] / cumulative[-1]))


def current_probabilities(arms: Sequence[ArmStats]) -> dict[str, dict[str, float]]:
    """``{segment: {strategy: probability}}``: Thompson's choice now, over the strategies each segment played.

    >>> current_probabilities([ArmStats("warm", "two_tower", 10, 9, 9.0), ArmStats("warm", "content", 10, 1, 1.0)])
    {'warm': {'two_tower': 0.9748, 'content': 0.0252}}
    """
    by_segment: dict[str, list[str]] = {}
    for arm in arms:
        by_segment.setdefault(arm.segment, []).append(arm.strategy)
    return {
        segment: ThompsonSampling(strategies).probabilities(arms, segment) for segment, strategies in by_segment.items()
    }
