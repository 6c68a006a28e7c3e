"""``towerlight ope``: estimate from logged impressions how a candidate strategy policy would have done.

Example::

    towerlight ope --policy two_tower                              # always two_tower
    towerlight ope --policy warm:two_tower --policy cold:popularity  # per segment
    towerlight ope --policy two_tower=0.8,popularity=0.2 --days 7 --interval bootstrap
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from towerlight.db.connection import connect
from towerlight.errors import ValidationError
from towerlight.impressions import logged_decisions
from towerlight_offline import console
from towerlight_offline.ope import LoggedDecisions, evaluate_policy, unsupported_mass

POLICY_HELP = "[SEGMENT:]STRATEGY or [SEGMENT:]S1=P1,S2=P2 (repeatable; without SEGMENT: every other segment)"


def register(sub: Any) -> None:
    parser = sub.add_parser("ope", help="off-policy evaluation of a strategy policy on logged impressions")
    parser.add_argument("--policy", action="append", required=True, metavar="SPEC", help=POLICY_HELP)
    parser.add_argument("--days", type=float, default=30.0, help="impressions of the last DAYS days (default 30)")
    parser.add_argument(
        "--settle-minutes",
        type=float,
        default=60.0,
        help="leave out impressions younger than this: their rewards may still arrive (default 60)",
    )
    parser.add_argument("--interval", choices=("clt", "bootstrap"), default="clt")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_ope)


def parse_policy(specs: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
    """``({segment: {strategy: p}}, default)`` from ``--policy`` values.

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
            raise ValidationError(f"--policy {spec!r}: probabilities must be numbers ({POLICY_HELP})") from None
        if "" in probabilities:
            raise ValidationError(f"--policy {spec!r}: expected {POLICY_HELP}")
        if segment:
            per_segment[segment] = probabilities
        else:
            default = probabilities
    return per_segment, default


def _ope(args: argparse.Namespace) -> int:
    per_segment, default = parse_policy(args.policy)
    until = datetime.now(UTC) - timedelta(minutes=args.settle_minutes)
    since = until - timedelta(days=args.days)
    with connect() as conn:
        segments, strategies, propensities, rewards = logged_decisions(conn, since, until)
    if not rewards:
        raise ValidationError(f"no impressions logged between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC")
    candidates = {s for mix in [*per_segment.values(), default or {}] for s in mix}
    try:
        logs = LoggedDecisions.from_columns(
            segments, strategies, propensities, rewards, action_names=sorted(candidates)
        )
        target = logs.policy_table(per_segment, default)
        estimates = evaluate_policy(
            logs, target, confidence=args.confidence, interval=args.interval, resamples=args.resamples
        )
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    unsupported = unsupported_mass(logs, target)
    logged_mean = float(logs.rewards.mean())
    if args.json:
        console.print_json(
            {
                "decisions": len(rewards),
                "logged_mean_reward": logged_mean,
                "unsupported_mass": unsupported,
                "estimates": [e.__dict__ for e in estimates],
            }
        )
        return 0
    console.say(f"{len(rewards)} impressions; the logged policy's mean reward: {logged_mean:.4f}")
    headers = ["estimator", "value", f"{args.confidence:.0%} low", "high", "effective n"]
    console.say(
        console.table(headers, [[e.estimator, e.value, e.low, e.high, f"{e.effective_n:.0f}"] for e in estimates])
    )
    if unsupported > 0:
        console.say(f"warning: {unsupported:.1%} of the candidate's choices were never logged: estimates are biased")
    return 0
