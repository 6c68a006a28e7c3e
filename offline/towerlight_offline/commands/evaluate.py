"""``towerlight evaluate``: fit every model on the train split and write a markdown + PNG report.

Example::

    towerlight evaluate --dataset movielens-100k --out towerlight-report
    towerlight evaluate --interactions events.csv --items items.csv --k 5 10 20 --no-tune
    towerlight evaluate --dataset movielens-100k --weights two_tower:0.8,content:0.2 --cold-share 0
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from towerlight_offline import console
from towerlight_offline.commands.train import add_data_arguments, load_dataset
from towerlight_offline.model.train import TwoTowerParams
from towerlight_offline.pipeline import TrainConfig


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="report Recall/NDCG at several k for every model, overall and per user segment (markdown + PNG)",
        description="Split each user's events chronologically, fit the two-tower model, the ranker and the tuned "
        "baselines on the train part, and write report.md with a plot per user segment. Nothing is published.",
    )
    add_data_arguments(parser, synthetic=(2000, 5000, 100_000))
    parser.add_argument(
        "--out", type=Path, default=Path("towerlight-report"), help="report directory (default ./towerlight-report)"
    )
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[1, 5, 10, 20, 50, 100],
        metavar="K",
        help="cut-offs (default 1 5 10 20 50 100)",
    )
    parser.add_argument("--epochs", type=int, help=f"two-tower epochs (default {TwoTowerParams().epochs})")
    parser.add_argument(
        "--light-events", type=int, default=5, metavar="N", help="light users: fewer than N training events (default 5)"
    )
    parser.add_argument(
        "--cold-share",
        type=float,
        default=0.2,
        metavar="F",
        help="cold-start simulation: refit every model with this share of users cut to their first 1 to N-1 "
        "events, and evaluate them (default 0.2; 0 leaves it out)",
    )
    parser.add_argument(
        "--weights",
        help="hybrid weights as name:weight pairs (default TOWERLIGHT_HYBRID_WEIGHTS, else the service's default)",
    )
    parser.add_argument(
        "--heavy-share",
        type=float,
        default=0.1,
        metavar="F",
        help="heavy users: the top F by training events (default 0.1)",
    )
    parser.add_argument("--no-tune", action="store_true", help="baselines with default parameters")
    parser.add_argument("--no-ranker", action="store_true", help="leave the second stage out")
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    from towerlight.errors import ValidationError
    from towerlight.recommend.strategies import DEFAULT_HYBRID_WEIGHTS, HybridWeights
    from towerlight_offline.evaluation_report import build_report, report_config, write_report

    if any(k <= 0 for k in args.k):
        args.parser.error("--k values must be positive")
    if not 0.0 < args.heavy_share < 1.0:
        args.parser.error("--heavy-share must be in (0, 1)")
    if not 0.0 <= args.cold_share < 1.0:
        args.parser.error("--cold-share must be in [0, 1)")
    weights_text = args.weights or os.environ.get("TOWERLIGHT_HYBRID_WEIGHTS")
    try:
        weights = HybridWeights.parse(weights_text, source="--weights") if weights_text else DEFAULT_HYBRID_WEIGHTS
    except ValidationError as exc:
        args.parser.error(exc.message)
    if args.interactions is None and (args.items or args.users):
        args.parser.error("--items and --users go with --interactions")
    params = TwoTowerParams() if args.epochs is None else replace(TwoTowerParams(), epochs=args.epochs)
    dataset, source = load_dataset(args)
    config = report_config(
        TrainConfig(source=source, two_tower=params, tune_baselines=not args.no_tune, ranker=not args.no_ranker)
    )
    report = build_report(
        dataset,
        config,
        k_values=tuple(args.k),
        light_events=args.light_events,
        heavy_share=args.heavy_share,
        cold_share=args.cold_share,
        weights=weights,
        progress=console.say,
    )
    for path in write_report(report, args.out):
        console.say(f"wrote {path}")
    return 0
