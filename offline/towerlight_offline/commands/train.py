"""``towerlight train``: train, evaluate beside baselines, publish a version, promote it if it passes.

Example::

    towerlight train --dataset movielens-100k --store file:///tmp/towerlight-store
    towerlight train --from-postgres --since 2026-01-01
    towerlight train --interactions events.csv --items items.csv --no-promote
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from towerlight.config import get_settings
from towerlight.errors import ConfigurationError
from towerlight_offline import console
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M
from towerlight_offline.local.store import ensure_store_uri
from towerlight_offline.model.train import TwoTowerParams
from towerlight_offline.pipeline import TrainConfig, TrainResult, run_training

DATASETS = ("movielens-100k", "synthetic")
TABLE_COLUMNS = ("recall@10", "ndcg@10", "recall@50", "coverage@10")


def add_data_arguments(
    parser: argparse.ArgumentParser, synthetic: tuple[int, int, int] = (20_000, 100_000, 1_000_000)
) -> None:
    """The options naming the data to train on (read by ``load_dataset``); shared with ``towerlight evaluate``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", choices=DATASETS, help="MovieLens-100K (downloaded and cached) or generated synthetic data"
    )
    source.add_argument(
        "--from-postgres", action="store_true", help="events in DATABASE_URL (or the embedded Postgres)"
    )
    source.add_argument("--interactions", type=Path, metavar="FILE", help="interactions CSV or Parquet")
    parser.add_argument("--items", type=Path, metavar="FILE", help="items file (with --interactions)")
    parser.add_argument("--users", type=Path, metavar="FILE", help="users file (with --interactions)")
    parser.add_argument(
        "--synthetic",
        nargs=3,
        type=int,
        metavar=("USERS", "ITEMS", "EVENTS"),
        default=synthetic,
        help=f"sizes of --dataset synthetic (default {' '.join(map(str, synthetic))})",
    )
    parser.add_argument("--since", metavar="ISO", help="with --from-postgres: only events at or after this time")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train, evaluate, publish and (if the quality gate passes) promote a model version",
        description="Split each user's events chronologically, train the two-tower model, evaluate it beside "
        "popularity, item-kNN and ALS, publish a new version and promote it if the quality gate passes.",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--store", metavar="URI", help="artifact store (default: $TOWERLIGHT_STORE, else the local store)"
    )
    parser.add_argument("--epochs", type=int, help=f"two-tower epochs (default {TwoTowerParams().epochs})")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="relative NDCG@10 drop the gate accepts (default 0.01)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip popularity, item-kNN and ALS")
    parser.add_argument(
        "--no-tune", action="store_true", help="baselines with default parameters (no grid on the validation part)"
    )
    parser.add_argument("--no-ranker", action="store_true", help="serve the two-tower order (no second stage)")
    parser.add_argument("--no-promote", action="store_true", help="publish only; never move CURRENT")
    parser.add_argument(
        "--no-refit", action="store_true", help="serve the model trained on the split (skip refitting on all events)"
    )
    parser.add_argument(
        "--max-users",
        type=int,
        default=10_000,
        metavar="N",
        help="evaluate at most N sampled test users (default 10000, 0: all)",
    )
    parser.add_argument(
        "--index-m", type=int, default=DEFAULT_M, metavar="M", help=f"hnsw graph degree (default {DEFAULT_M})"
    )
    parser.add_argument(
        "--index-ef-construction",
        type=int,
        default=DEFAULT_EF_CONSTRUCTION,
        metavar="EF",
        help=f"hnsw build-time search width (default {DEFAULT_EF_CONSTRUCTION})",
    )
    parser.set_defaults(func=run, parser=parser)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"--since must be an ISO date or time, got {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_dataset(args: argparse.Namespace) -> tuple[Dataset, str]:
    """The dataset the arguments name, and a short description of its source for the manifest."""
    if args.dataset == "synthetic":
        from towerlight_offline.data.synthetic import synthetic_dataset

        users, items, events = args.synthetic
        return synthetic_dataset(users, items, events), f"synthetic:{users}x{items}x{events}"
    if args.dataset == "movielens-100k":
        from towerlight_offline.data.movielens import load_movielens_dataset

        return load_movielens_dataset(), "movielens-100k"
    if args.interactions is not None:
        from towerlight_offline.data.sources import dataset_from_files

        return dataset_from_files(args.interactions, args.items, args.users), f"files:{args.interactions.name}"
    from towerlight.db.connection import connect
    from towerlight_offline.data.sources import dataset_from_postgres
    from towerlight_offline.local.postgres import ensure_database_url

    since = _since(args.since)
    settings = get_settings()
    # a configured database (URL or, in AWS, a secret) wins; otherwise start the embedded Postgres
    url = None if settings.database_url or settings.database_secret_arn else ensure_database_url()
    with connect(url=url) as conn:
        dataset = dataset_from_postgres(conn, since=since)
    return dataset, "postgres" + (f" since {since.isoformat()}" if since else "")


def print_summary(result: TrainResult) -> None:
    """The evaluation table, the version and what the gate did, and the time of every stage."""
    evaluation = result.manifest["evaluation"]
    console.heading(f"Evaluation on the held-out split ({evaluation['users']} users)")
    rows = [[name, *(row[c] for c in TABLE_COLUMNS), row["users"]] for name, row in result.metrics.items()]
    console.say(console.table(["model", "Recall@10", "NDCG@10", "Recall@50", "coverage@10", "users"], rows))
    console.say(f"Served: {evaluation['served_row']}; {evaluation['served_model']}.")
    if evaluation.get("ranker"):
        ranker = evaluation["ranker"]
        scores = ranker["validation_ndcg@10"]
        console.say(f"Ranker: {ranker['chosen']} (validation NDCG@10 of the re-ranked candidates: {scores}).")
    if evaluation.get("baseline_tuning"):
        chosen = evaluation["baseline_tuning"]["chosen"]
        console.say("Baselines tuned on the validation part: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    console.heading("Version")
    index, parity = result.manifest["index"], result.manifest["parity"]
    console.say(f"{result.version} in {result.store_uri}")
    console.say(
        f"hnsw recall@{index['k']} {index['recall']:.4f} (ef {index['ef_search']}, M {index['M']}, "
        f"{index['vectors']:,} distinct vectors for {index['items']:,} items); "
        f"ONNX max |Δ| user {parity['user_tower_max_abs_diff']:.1e}, "
        f"item {parity['item_tower_max_abs_diff']:.1e}"
    )
    console.say(result.outcome)
    if result.pruned:
        console.say(f"pruned: {', '.join(result.pruned)}")
    console.heading("Time per stage")
    timings = [[stage, f"{seconds:.1f}"] for stage, seconds in result.timings.items()]
    timings.append(["total", f"{sum(result.timings.values()):.1f}"])
    console.say(console.table(["stage", "seconds"], timings))


def run(args: argparse.Namespace) -> int:
    if args.interactions is None and (args.items or args.users):
        args.parser.error("--items and --users go with --interactions")
    if args.since and not args.from_postgres:
        args.parser.error("--since goes with --from-postgres")
    if args.epochs is not None and args.epochs < 0:
        args.parser.error("--epochs must be >= 0")
    if args.index_m < 2 or args.index_ef_construction < 1:
        args.parser.error("--index-m must be >= 2 and --index-ef-construction >= 1")
    store = args.store or ensure_store_uri()
    params = TwoTowerParams() if args.epochs is None else replace(TwoTowerParams(), epochs=args.epochs)
    dataset, source = load_dataset(args)
    config = TrainConfig(
        source=source,
        store_uri=store,
        two_tower=params,
        baselines=not args.no_baselines,
        tune_baselines=not args.no_tune,
        ranker=not args.no_ranker,
        tolerance=args.tolerance,
        promote=not args.no_promote,
        max_eval_users=args.max_users or None,
        refit_on_all=not args.no_refit,
        index_M=args.index_m,
        index_ef_construction=args.index_ef_construction,
    )
    result = run_training(dataset, config, progress=console.say)
    print_summary(result)
    return 0
