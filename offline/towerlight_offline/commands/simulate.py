"""``towerlight simulate``: the strategy bandit against synthetic users whose click rates are known.

Runs in a schema of its own (created, migrated, dropped), on ``DATABASE_URL`` or the embedded Postgres.

Example::

    towerlight simulate --rounds 5000 --refresh 100
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import asdict
from typing import Any

import psycopg

from towerlight.db.connection import connect
from towerlight.db.migrate import migrate
from towerlight_offline import console
from towerlight_offline.local.postgres import ensure_database_url, with_search_path
from towerlight_offline.simulate import DEFAULT_WORLD, SimulationResult, simulate


def register(sub: Any) -> None:
    parser = sub.add_parser("simulate", help="run the strategy bandit against synthetic users (known click rates)")
    parser.add_argument("--rounds", type=int, default=5000, help="requests to simulate (default 5000)")
    parser.add_argument("--refresh", type=int, default=100, help="requests between counter reads (default 100)")
    parser.add_argument("--exploration", type=float, default=0.05, help="uniform share of traffic (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    url = ensure_database_url()
    schema = f"towerlight_sim_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"'.encode())
    try:
        with connect(url=with_search_path(url, schema)) as conn:
            migrate(conn)
            result = simulate(
                conn,
                DEFAULT_WORLD,
                rounds=args.rounds,
                refresh=args.refresh,
                exploration=args.exploration,
                seed=args.seed,
            )
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())
    _report(result, as_json=args.json)
    return 0


def _report(result: SimulationResult, *, as_json: bool) -> None:
    if as_json:
        console.print_json(
            asdict(result)
            | {"ope": {s: {"truth": t, "estimates": [asdict(e) for e in es]} for s, (t, es) in result.ope.items()}}
        )
        return
    best_fixed = max(result.fixed_reward, key=result.fixed_reward.__getitem__)
    console.say(
        f"{result.rounds} rounds: Thompson earned {result.thompson_reward:.1f} ({result.thompson_expected:.1f} "
        f"expected; best fixed, {best_fixed}: {result.fixed_reward[best_fixed]:.1f}); regret against each "
        f"segment's best {result.regret:.1f}; last 10% of rounds on the best strategy: {result.best_share_last:.1%}; "
        f"80% reached after {result.rounds_to_80 or 'never'} rounds"
    )
    rows = []
    for strategy, (truth, estimates) in result.ope.items():
        for e in estimates:
            rows.append(
                [strategy, truth, e.estimator, e.value, e.low, e.high, "yes" if e.low <= truth <= e.high else "NO"]
            )
    console.say(console.table(["always", "true value", "estimator", "estimate", "95% low", "high", "covers"], rows))
