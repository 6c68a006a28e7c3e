"""``towerlight bench serve|ingest|track|explain``: benchmarks of the recommend, ingest and track functions.

Each starts its own local stack (embedded Postgres unless ``DATABASE_URL`` is set; moto's S3 endpoint
for ``serve``, its SQS endpoint for ``track``), measures a baseline in the same run, writes
``<out>/<name>-<timestamp>.json`` and ``.md`` and prints the markdown. Examples::

    $ towerlight bench serve                      # 100k items, 64-d: warm p50/p99, cold start, peak RSS
    $ towerlight bench serve --items 1000000
    $ towerlight bench ingest --events 200000 --batch 1000
    $ towerlight bench explain                    # explain=true's cost per request, in process
    $ towerlight bench track                      # duration per POST /events of 1 and of 100 events
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from towerlight_offline import console


def run_serve(args: argparse.Namespace) -> int:
    from towerlight_offline.bench.serve import ServeBenchConfig, run_serve_bench

    config = ServeBenchConfig(
        items=args.items,
        dim=args.dim,
        requests=args.requests,
        users=args.users,
        warmup=args.warmup,
        train_users=args.train_users,
        train_events=args.train_events,
        coldstart_runs=args.coldstart_runs,
        seed=args.seed,
        out=Path(args.out),
    )
    report, paths = run_serve_bench(config, say=console.say)
    return _show(report.to_markdown(), paths)


def run_ingest(args: argparse.Namespace) -> int:
    from towerlight_offline.bench.ingest import IngestBenchConfig, run_ingest_bench

    config = IngestBenchConfig(
        events=args.events,
        batch=args.batch,
        baseline_events=args.baseline_events,
        autocommit_events=args.autocommit_events,
        duplicate_batches=args.duplicate_batches,
        seed=args.seed,
        out=Path(args.out),
    )
    report, paths = run_ingest_bench(config, say=console.say)
    return _show(report.to_markdown(), paths)


def run_explain(args: argparse.Namespace) -> int:
    from towerlight_offline.bench.explain import ExplainBenchConfig, run_explain_bench

    config = ExplainBenchConfig(requests=args.requests, k=args.k, epochs=args.epochs, seed=args.seed)
    console.say(run_explain_bench(config, say=console.say))
    return 0


def run_track(args: argparse.Namespace) -> int:
    from towerlight_offline.bench.track import TrackBenchConfig, run_track_bench

    config = TrackBenchConfig(
        plan=((1, args.single_posts), (100, args.batch_posts)), warmup=args.warmup, seed=args.seed, out=Path(args.out)
    )
    report, paths = run_track_bench(config, say=console.say)
    return _show(report.to_markdown(), paths)


def _show(markdown: str, paths: tuple[Path, Path]) -> int:
    console.say()
    console.say(markdown)
    console.say(f"wrote {paths[0]} and {paths[1]}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the recommend, ingest and track functions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")

    serve = benches.add_parser("serve", help="warm latency, cold start and peak RSS of the recommend function")
    serve.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100000)")
    serve.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    serve.add_argument("--requests", type=int, default=2000, help="timed requests per path (default 2000)")
    serve.add_argument("--users", type=int, default=500, help="users with history in Postgres (default 500)")
    serve.add_argument("--warmup", type=int, default=200, help="untimed requests first (default 200)")
    serve.add_argument("--train-users", type=int, default=20_000, help="users in the training data (default 20000)")
    serve.add_argument(
        "--train-events", type=int, default=100_000, help="training events; every item is embedded (default 100000)"
    )
    serve.add_argument("--coldstart-runs", type=int, default=5, help="fresh processes started (default 5)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--out", default="bench-results", help="directory for the JSON and markdown reports")
    serve.set_defaults(func=run_serve)

    ingest = benches.add_parser("ingest", help="events/s of the ingest function into Postgres")
    ingest.add_argument("--events", type=int, default=200_000, help="events through the handler (default 200000)")
    ingest.add_argument("--batch", type=int, default=1000, help="SQS records per invocation (default 1000)")
    ingest.add_argument(
        "--baseline-events", type=int, default=20_000, help="events for the one-INSERT-per-event baseline"
    )
    ingest.add_argument(
        "--autocommit-events", type=int, default=2_000, help="events for the one-commit-per-event baseline"
    )
    ingest.add_argument("--duplicate-batches", type=int, default=20, help="batches redelivered whole (default 20)")
    ingest.add_argument("--seed", type=int, default=0)
    ingest.add_argument("--out", default="bench-results", help="directory for the JSON and markdown reports")
    ingest.set_defaults(func=run_ingest)

    explain = benches.add_parser("explain", help="cost of explain=true per request, per strategy (in process)")
    explain.add_argument("--requests", type=int, default=2000, help="requests per strategy and path (default 2000)")
    explain.add_argument("--k", type=int, default=10, help="items per page (default 10)")
    explain.add_argument("--epochs", type=int, default=3, help="two-tower epochs of the model (default 3)")
    explain.add_argument("--seed", type=int, default=0)
    explain.set_defaults(func=run_explain)

    track = benches.add_parser("track", help="duration of the track function per POST of 1 and of 100 events")
    track.add_argument("--single-posts", type=int, default=300, help="timed POSTs of 1 event (default 300)")
    track.add_argument("--batch-posts", type=int, default=60, help="timed POSTs of 100 events (default 60)")
    track.add_argument("--warmup", type=int, default=10, help="untimed POSTs first, per size (default 10)")
    track.add_argument("--seed", type=int, default=0)
    track.add_argument("--out", default="bench-results", help="directory for the JSON and markdown reports")
    track.set_defaults(func=run_track)
