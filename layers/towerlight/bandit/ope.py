"""Off-policy evaluation: how a candidate policy would have done, from decisions logged with propensities.

The logs are (context, action, propensity, reward) rows: here a user segment, the strategy served, the
probability the serving policy chose it with, and the reward it earned. A candidate policy is a table
``target[context, action]`` of probabilities. Three estimators of its expected reward per decision:

- IPS: mean(w · r), w = target(a | x) / propensity — unbiased when propensities are right and positive;
- SNIPS: Σ w · r / Σ w — self-normalized, a little biased, much less variance when weights are large;
- doubly robust: mean(Σ_a target(a | x) · q(x, a) + w · (r - q(x, a))), with q the mean reward of each
  (context, action) cell fitted on the other half of the logs (cross-fitting) — unbiased like IPS, with
  the variance of what q does not explain.

Confidence intervals are normal (CLT; delta method for SNIPS) or percentile bootstrap.

Example::

    >>> logs = LoggedDecisions.from_columns(segments, strategies, propensities, rewards)
    >>> target = logs.policy_table({"warm": {"two_tower": 1.0}, "cold": {"popularity": 1.0}})
    >>> [f"{e.estimator} {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]" for e in evaluate_policy(logs, target)]
    ['ips 0.121 [0.109, 0.133]', 'snips 0.120 [0.109, 0.131]', 'dr 0.120 [0.111, 0.129]']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")
# Bootstrap resamples drawn at once: bounds memory at chunk × n counts.
_BOOTSTRAP_CHUNK = 50


@dataclass(frozen=True)
class LoggedDecisions:
    """Logged decisions with contexts and actions as integer codes into ``context_names``/``action_names``."""

    contexts: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    context_names: tuple[str, ...]
    action_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.rewards)
        if n == 0:
            raise ValueError("no logged decisions to evaluate on")
        if not len(self.contexts) == len(self.actions) == len(self.propensities) == n:
            raise ValueError("contexts, actions, propensities and rewards must have the same length")
        if np.any(~(self.propensities > 0)) or np.any(self.propensities > 1):
            raise ValueError("every propensity must be in (0, 1]")
        if not np.all(np.isfinite(self.rewards)):
            raise ValueError("every reward must be a finite number")

    @classmethod
    def from_columns(
        cls,
        contexts: Sequence[str],
        actions: Sequence[str],
        propensities: Sequence[float],
        rewards: Sequence[float],
        *,
        action_names: Sequence[str] = (),
    ) -> LoggedDecisions:
        """Encode named columns; ``action_names`` adds actions a candidate may take that were never logged.

        >>> LoggedDecisions.from_columns(["warm"], ["two_tower"], [0.9], [1.0]).action_names
        ('two_tower',)
        """
        context_names = tuple(sorted(set(contexts)))
        names = tuple(sorted(set(actions).union(action_names)))
        return cls(
            contexts=_codes(contexts, context_names),
            actions=_codes(actions, names),
            propensities=np.asarray(propensities, dtype=np.float64),
            rewards=np.asarray(rewards, dtype=np.float64),
            context_names=context_names,
            action_names=names,
        )

    def policy_table(
        self, policy: Mapping[str, Mapping[str, float]], default: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """``target[context, action]`` from ``{context: {action: probability}}``; ``default`` for other contexts.

        Raises ``ValueError`` for an unknown action or a row that does not sum to 1.
        """
        table = np.zeros((len(self.context_names), len(self.action_names)))
        for row, context in enumerate(self.context_names):
            for action, probability in policy.get(context, default or {}).items():
                if action not in self.action_names:
                    raise ValueError(f"the candidate policy chooses {action!r}, not among {list(self.action_names)}")
                table[row, self.action_names.index(action)] = probability
            if not np.isclose(table[row].sum(), 1.0):
                raise ValueError(f"the candidate's probabilities for {context!r} sum to {table[row].sum():g}, not 1")
        return table


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its confidence interval; ``effective_n`` is Kish's (Σw)² / Σw²."""

    estimator: str
    value: float
    low: float
    high: float
    n: int
    effective_n: float


def evaluate_policy(
    logs: LoggedDecisions,
    target: np.ndarray,
    *,
    confidence: float = 0.95,
    interval: Literal["clt", "bootstrap"] = "clt",
    resamples: int = 1000,
    seed: int = 0,
) -> list[Estimate]:
    """IPS, SNIPS and doubly robust estimates of ``target``'s mean reward per decision, with intervals.

    ``target`` is a (contexts × actions) table of probabilities (``LoggedDecisions.policy_table``).
    """
    if target.shape != (len(logs.context_names), len(logs.action_names)):
        raise ValueError(f"target must be {len(logs.context_names)} × {len(logs.action_names)}, got {target.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    weights = target[logs.contexts, logs.actions] / logs.propensities
    r = logs.rewards
    dr_terms = _doubly_robust_terms(logs, target, weights, np.random.default_rng(seed))
    statistics: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "ips": lambda counts: counts @ (weights * r) / len(r),
        "snips": lambda counts: (counts @ (weights * r)) / np.maximum(counts @ weights, 1e-300),
        "dr": lambda counts: counts @ dr_terms / len(r),
    }
    snips_value = float(weights @ r / weights.sum()) if weights.sum() > 0 else 0.0
    values = {"ips": float(np.mean(weights * r)), "snips": snips_value, "dr": float(np.mean(dr_terms))}
    if interval == "clt":
        # Influence functions: the mean's own terms; SNIPS's by the delta method.
        spread = {
            "ips": weights * r,
            "snips": weights * (r - snips_value) / max(float(np.mean(weights)), 1e-300),
            "dr": dr_terms,
        }
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        bounds = {k: (values[k] - z * _stderr(v), values[k] + z * _stderr(v)) for k, v in spread.items()}
    elif interval == "bootstrap":
        draws = _bootstrap(len(r), statistics, resamples, np.random.default_rng(seed + 1))
        tail = (1 - confidence) / 2 * 100
        bounds = {k: (float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail))) for k, d in draws.items()}
    else:
        raise ValueError(f"interval must be 'clt' or 'bootstrap', got {interval!r}")
    effective = float(weights.sum() ** 2 / (weights**2).sum()) if weights.any() else 0.0
    return [Estimate(k, values[k], *bounds[k], n=len(r), effective_n=effective) for k in ESTIMATORS]


def unsupported_mass(logs: LoggedDecisions, target: np.ndarray) -> float:
    """The share of decisions (weighted by context frequency) where ``target`` picks an action never logged there.

    Importance weighting cannot see those choices: a non-zero value biases every estimate.
    """
    logged = np.zeros_like(target, dtype=bool)
    logged[logs.contexts, logs.actions] = True
    context_share = np.bincount(logs.contexts, minlength=len(logs.context_names)) / len(logs.contexts)
    return float(context_share @ np.where(logged, 0.0, target).sum(axis=1))


def _codes(names: Sequence[str], vocabulary: tuple[str, ...]) -> np.ndarray:
    index = {name: code for code, name in enumerate(vocabulary)}
    return np.fromiter((index[name] for name in names), dtype=np.int64, count=len(names))


def _stderr(terms: np.ndarray) -> float:
    return float(np.std(terms, ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else float("inf")


def _cell_means(logs: LoggedDecisions, rows: np.ndarray) -> np.ndarray:
    """q(x, a): each (context, action) cell's mean reward over ``rows``, shrunk to their mean by one pseudo-count."""
    shape = (len(logs.context_names), len(logs.action_names))
    cells = logs.contexts[rows] * shape[1] + logs.actions[rows]
    sums = np.bincount(cells, weights=logs.rewards[rows], minlength=shape[0] * shape[1])
    counts = np.bincount(cells, minlength=shape[0] * shape[1])
    prior = float(logs.rewards[rows].mean()) if len(rows) else 0.0
    return ((sums + prior) / (counts + 1)).reshape(shape)


def _doubly_robust_terms(
    logs: LoggedDecisions, target: np.ndarray, weights: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Per-decision DR terms, q fitted on the other half of the logs (two-fold cross-fitting)."""
    folds = rng.permutation(len(logs.rewards)) % 2
    terms = np.empty(len(logs.rewards))
    for fold in (0, 1):
        rows = np.flatnonzero(folds == fold)
        q = _cell_means(logs, np.flatnonzero(folds != fold))
        x, a = logs.contexts[rows], logs.actions[rows]
        direct = (target[x] * q[x]).sum(axis=1)
        terms[rows] = direct + weights[rows] * (logs.rewards[rows] - q[x, a])
    return terms


def _bootstrap(
    n: int, statistics: Mapping[str, Callable[[np.ndarray], np.ndarray]], resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Each statistic over ``resamples`` multinomial resamples of the n decisions (counts × per-row terms)."""
    draws: dict[str, list[np.ndarray]] = {k: [] for k in statistics}
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(_BOOTSTRAP_CHUNK, resamples - start)).astype(float)
        for name, statistic in statistics.items():
            draws[name].append(statistic(counts))
    return {k: np.concatenate(v) for k, v in draws.items()}
