"""Online-learning statistics for operators: the bandit's arms and choices, and each experiment variant's results.

- ``arms``: per (segment, strategy) the additive counters, the mean reward per impression, the share of
  impressions with any reward, and the probability Thompson sampling now gives each strategy;
- ``variants``: per experiment variant over the window, the model versions that served it, impressions,
  click-through (an attributed ``click`` or better), conversion (an attributed ``purchase``) and mean
  reward, each with a 95% confidence interval (Wilson for the rates, normal for the mean);
- ``exploration``: item exploration's configured rate, its VW model (version, decisions learned, watermark)
  and, over the window, the decisions that exploited the model's best item and those that explored, with
  the mean reward of the chosen item for each.

Example::

    >>> online_stats(conn, days=7)["variants"][0]
    {'variant': 'control', 'impressions': 5120, 'ctr': {'value': 0.081, 'low': 0.074, 'high': 0.089}, ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from towerlight.admin.stats import stats_window
from towerlight.bandit.arms import read_arms
from towerlight.bandit.thompson import current_probabilities
from towerlight.event_types import EVENT_TYPES
from towerlight.exploration.model import read_vw_pointer
from towerlight.exploration.records import window_summary
from towerlight.exploration.settings import exploration_settings
from towerlight.store import ArtifactStore

Z_95 = 1.959964

# An impression "clicked" when an attributed event for one of its items is a click or worth more.
_CLICK_OR_BETTER = [name for name, t in EVENT_TYPES.items() if t.reward >= EVENT_TYPES["click"].reward]
_PER_VARIANT = """
SELECT coalesce(i.variant, ''), count(*),
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM events e WHERE e.recommendation_id = i.recommendation_id
             AND e.item_id = ANY(i.item_ids) AND e.event_type = ANY(%(clicks)s))),
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM events e WHERE e.recommendation_id = i.recommendation_id
             AND e.item_id = ANY(i.item_ids) AND e.event_type = 'purchase')),
       avg(i.reward), coalesce(stddev_samp(i.reward), 0),
       array_agg(DISTINCT i.model_version ORDER BY i.model_version)
FROM impressions i
WHERE i.created_at >= %(since)s AND i.created_at < %(until)s
GROUP BY 1 ORDER BY 1
"""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (sound near 0 and 1, unlike the normal one).

    >>> [round(x, 3) for x in wilson_interval(8, 100)]
    [0.041, 0.15]
    """
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(successes: int, trials: int) -> dict[str, float | None]:
    low, high = wilson_interval(successes, trials)
    return {"value": round(successes / trials, 6) if trials else None, "low": round(low, 6), "high": round(high, 6)}


def _mean(mean: float, sd: float, n: int) -> dict[str, float]:
    half = Z_95 * sd / math.sqrt(n)
    return {"value": round(mean, 6), "low": round(mean - half, 6), "high": round(mean + half, 6)}


def _exploration(
    summary: list[tuple[bool, int, float, float]], store: Callable[[], ArtifactStore] | None
) -> dict[str, Any]:
    settings = exploration_settings()
    pointer = read_vw_pointer(store())[0] if store is not None else None
    by_kind = {greedy: (n, mean, sd) for greedy, n, mean, sd in summary}

    def kind(greedy: bool) -> dict[str, Any]:
        n, mean, sd = by_kind.get(greedy, (0, 0.0, 0.0))
        return {"decisions": n, "mean_reward": _mean(mean, sd, n) if n else None}

    return {
        "epsilon": settings.epsilon if settings else None,
        "model": None
        if pointer is None
        else {
            "version": pointer.version,
            "examples": pointer.examples,
            "learned_through": pointer.to_json()["learned_through"],
            "updated_at": pointer.updated_at,
        },
        "decisions": sum(n for n, _, _ in by_kind.values()),
        "exploited": kind(True),
        "explored": kind(False),
    }


def online_stats(
    conn: psycopg.Connection,
    *,
    days: int = 30,
    now: datetime | None = None,
    store: Callable[[], ArtifactStore] | None = None,
) -> dict[str, Any]:
    """The bandit's arms (all time: counters are cumulative), the variants' results and item exploration's
    over ``days``; ``store`` holds the VW model (None: no store configured, so no model)."""
    since, until = stats_window(days, now)
    with conn.transaction():
        arms = read_arms(conn)
        variants = conn.execute(_PER_VARIANT, {"clicks": _CLICK_OR_BETTER, "since": since, "until": until}).fetchall()
        explorations = window_summary(conn, since, until)
    choice = current_probabilities(arms)
    return {
        "window": {"since": since.isoformat(), "until": until.isoformat(), "days": days},
        "arms": [
            {
                "segment": a.segment,
                "strategy": a.strategy,
                "impressions": a.impressions,
                "mean_reward": round(a.reward_sum / a.impressions, 6) if a.impressions else None,
                "rewarded": _rate(a.successes, a.impressions),
                "thompson_probability": round(choice[a.segment][a.strategy], 6),
            }
            for a in arms
        ],
        "variants": [
            {
                "variant": variant or None,
                "model_versions": versions,
                "impressions": n,
                "ctr": _rate(clicked, n),
                "conversion": _rate(converted, n),
                "mean_reward": _mean(mean, sd, n),
            }
            for variant, n, clicked, converted, mean, sd, versions in variants
        ],
        "exploration": _exploration(explorations, store),
    }
