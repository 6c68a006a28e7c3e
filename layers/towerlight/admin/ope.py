"""Off-policy evaluation of a strategy policy on the logged impressions: ``GET /admin/ope`` and ``towerlight ope``.

A candidate policy is given as ``--policy``/``policy=`` specs (``parse_policy``), or ``thompson``: the
strategy bandit's choice probabilities now, per segment, from its counters (what
``/admin/stats/online`` shows as ``thompson_probability``; a segment without counters gets the uniform
choice over the strategies the bandit knows). The estimators are ``towerlight.bandit.ope``'s.

Example::

    >>> report = policy_report(conn, ["warm:two_tower", "cold:popularity"], *ope_window(days=7))
    >>> [(e["estimator"], round(e["value"], 3)) for e in report["estimates"]]
    [('ips', 0.121), ('snips', 0.12), ('dr', 0.12)]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg

from towerlight.bandit.arms import read_arms
from towerlight.bandit.ope import LoggedDecisions, evaluate_policy, unsupported_mass
from towerlight.bandit.thompson import current_probabilities
from towerlight.errors import ValidationError
from towerlight.impressions import logged_decisions

THOMPSON = "thompson"
POLICY_HELP = (
    "[SEGMENT:]STRATEGY or [SEGMENT:]S1=P1,S2=P2 (repeatable; without SEGMENT: every other segment), "
    f"or {THOMPSON} (the strategy bandit's choice probabilities now)"
)
Policy = tuple[dict[str, dict[str, float]], dict[str, float] | None]
"""``({segment: {strategy: probability}}, default for other segments)``."""


def parse_policy(specs: Sequence[str]) -> Policy:
    """``({segment: {strategy: p}}, default)`` from policy specs (``thompson`` is read by ``target_policy``).

    >>> parse_policy(["warm:two_tower", "popularity=0.5,content=0.5"])
    ({'warm': {'two_tower': 1.0}}, {'popularity': 0.5, 'content': 0.5})
    """
    per_segment: dict[str, dict[str, float]] = {}
    default: dict[str, float] | None = None
    for spec in specs:
        segment, _, mix = spec.rpartition(":")
        try:
            probabilities = {
                name.strip(): float(p) if sep else 1.0
                for name, sep, p in (part.partition("=") for part in mix.split(","))
            }
        except ValueError:
            raise ValidationError(f"policy {spec!r}: probabilities must be numbers ({POLICY_HELP})") from None
        if "" in probabilities:
            raise ValidationError(f"policy {spec!r}: expected {POLICY_HELP}")
        if segment:
            per_segment[segment] = probabilities
        else:
            default = probabilities
    return per_segment, default


def target_policy(conn: psycopg.Connection, specs: Sequence[str]) -> Policy:
    """The candidate of ``specs``: parsed, or for ``[thompson]`` the bandit's current choice probabilities."""
    if THOMPSON not in specs:
        return parse_policy(specs)
    if len(specs) != 1:
        raise ValidationError(f"policy {THOMPSON!r} is a whole policy: give it alone")
    arms = read_arms(conn)
    if not arms:
        raise ValidationError("the strategy bandit has no counters yet: there is no Thompson policy to evaluate")
    strategies = sorted({arm.strategy for arm in arms})
    return current_probabilities(arms), {s: 1.0 / len(strategies) for s in strategies}


def ope_window(
    days: float = 30.0, settle_minutes: float = 60.0, since: datetime | None = None, until: datetime | None = None
) -> tuple[datetime, datetime]:
    """``[since, until)``: until defaults to now minus ``settle_minutes`` (rewards of younger impressions
    may still arrive), since to ``days`` before until.

    >>> ope_window(7, 60, until=datetime(2026, 11, 30, tzinfo=UTC))[0]
    datetime.datetime(2026, 11, 23, 0, 0, tzinfo=datetime.timezone.utc)
    """
    until = until or datetime.now(UTC) - timedelta(minutes=settle_minutes)
    since = since or until - timedelta(days=days)
    if since >= until:
        raise ValidationError(f"the window is empty: since {since.isoformat()} is not before until {until.isoformat()}")
    return since, until


def policy_report(
    conn: psycopg.Connection,
    specs: Sequence[str],
    since: datetime,
    until: datetime,
    *,
    confidence: float = 0.95,
    interval: Literal["clt", "bootstrap"] = "clt",
    resamples: int = 1000,
) -> dict[str, Any]:
    """IPS, SNIPS and doubly robust estimates of the policy of ``specs`` on impressions of ``[since, until)``.

    Raises ``ValidationError`` (422) for a malformed policy or a window without impressions.
    """
    per_segment, default = target_policy(conn, specs)
    segments, strategies, propensities, rewards = logged_decisions(conn, since, until)
    if not rewards:
        raise ValidationError(
            f"no impressions logged between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC",
            {"since": since.isoformat(), "until": until.isoformat()},
        )
    candidates = {s for mix in [*per_segment.values(), default or {}] for s in mix}
    try:
        logs = LoggedDecisions.from_columns(
            segments, strategies, propensities, rewards, action_names=sorted(candidates)
        )
        target = logs.policy_table(per_segment, default)
        estimates = evaluate_policy(logs, target, confidence=confidence, interval=interval, resamples=resamples)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return {
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "policy": {"segments": per_segment, "default": default},
        "decisions": len(rewards),
        "logged_mean_reward": float(logs.rewards.mean()),
        "unsupported_mass": unsupported_mass(logs, target),
        "confidence": confidence,
        "interval": interval,
        "estimates": [e.__dict__ for e in estimates],
    }
