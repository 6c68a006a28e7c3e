"""``towerlight demo``: the whole loop on embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
from typing import Any

from towerlight_offline.demo import DemoOptions, run_demo


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="fetch, import, train, publish, recommend, track, ingest, recommend again — all local",
    )
    parser.add_argument("--user", default="42", help="the MovieLens user to follow (default 42)")
    parser.add_argument("-k", type=int, default=10, help="recommendations to show (default 10)")
    parser.add_argument("--epochs", type=int, help="two-tower epochs (default: the training default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(DemoOptions(user_id=args.user, k=args.k, epochs=args.epochs))
