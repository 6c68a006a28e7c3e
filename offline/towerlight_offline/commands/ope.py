"""``towerlight ope``: estimate from logged impressions how a candidate strategy policy would have done.

Example::

    towerlight ope --policy two_tower                              # always two_tower
    towerlight ope --policy warm:two_tower --policy cold:popularity  # per segment
    towerlight ope --policy two_tower=0.8,popularity=0.2 --days 7 --interval bootstrap
    towerlight ope --policy thompson                               # the strategy bandit as it stands
"""

from __future__ import annotations

import argparse
from typing import Any

from towerlight.admin.ope import POLICY_HELP, ope_window, parse_policy, policy_report
from towerlight.db.connection import connect
from towerlight_offline import console


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


def _ope(args: argparse.Namespace) -> int:
    parse_policy(args.policy)  # a malformed policy is refused before any database read
    since, until = ope_window(args.days, args.settle_minutes)
    with connect() as conn:
        report = policy_report(
            conn,
            args.policy,
            since,
            until,
            confidence=args.confidence,
            interval=args.interval,
            resamples=args.resamples,
        )
    if args.json:
        console.print_json(report)
        return 0
    estimates = report["estimates"]
    console.say(
        f"{report['decisions']} impressions; the logged policy's mean reward: {report['logged_mean_reward']:.4f}"
    )
    headers = ["estimator", "value", f"{args.confidence:.0%} low", "high", "effective n"]
    rows = [[e["estimator"], e["value"], e["low"], e["high"], f"{e['effective_n']:.0f}"] for e in estimates]
    console.say(console.table(headers, rows))
    if report["unsupported_mass"] > 0:
        share = report["unsupported_mass"]
        console.say(f"warning: {share:.1%} of the candidate's choices were never logged: estimates are biased")
    return 0
