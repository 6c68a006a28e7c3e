"""``towerlight simulate``: the real handlers against synthetic users whose true preferences are known.

Runs on a local stack (moto's S3 and SQS server; ``DATABASE_URL`` or an embedded Postgres, a schema per
policy, dropped afterwards) and writes ``simulation.md``, ``.json`` and ``.png`` into ``--out``.

Example::

    towerlight simulate --rounds 20000 --out simulation
    towerlight simulate --rounds 2000 --policy thompson --policy 'greedy:TOWERLIGHT_BANDIT_STRATEGIES=two_tower'
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from towerlight_offline import console
from towerlight_offline.simulate.report import done_when, write_report
from towerlight_offline.simulate.run import Policy, SimulationConfig
from towerlight_offline.simulate.simulation import BUILT_IN_POLICIES, run_simulation
from towerlight_offline.simulate.stack import ModelConfig
from towerlight_offline.simulate.world import WorldConfig

_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*")
POLICY_HELP = (
    f"a built-in policy ({', '.join(BUILT_IN_POLICIES)}) or NAME:VAR=VALUE[,VAR=VALUE...]: recommend's auto "
    "under those environment variables (repeatable; default: every built-in one)"
)


def register(sub: Any) -> None:
    parser = sub.add_parser("simulate", help="drive the handlers with synthetic users of known preferences")
    run, world, model = SimulationConfig(), WorldConfig(), ModelConfig()
    parser.add_argument("--rounds", type=int, default=run.rounds, help=f"requests per policy (default {run.rounds})")
    parser.add_argument("--policy", action="append", metavar="SPEC", help=POLICY_HELP)
    parser.add_argument("--k", type=int, default=run.k, help=f"items per request (default {run.k})")
    parser.add_argument("--warm-users", type=int, default=run.warm_users, help="simulated users with history")
    parser.add_argument("--cold-users", type=int, default=run.cold_users, help="simulated users never seen before")
    parser.add_argument("--drain-every", type=int, default=run.drain_every, help="rounds between ingest runs")
    parser.add_argument("--duplicate-rate", type=float, default=run.duplicate_rate, help="track calls sent twice")
    parser.add_argument("--users", type=int, default=world.users, help="users of the synthetic training data")
    parser.add_argument("--items", type=int, default=world.items, help="items of the synthetic catalogue")
    parser.add_argument("--events", type=int, default=world.events, help="events of the synthetic training data")
    parser.add_argument("--favourite", type=float, default=world.favourite, help="logit of a favourite category")
    parser.add_argument("--quality", type=float, default=world.quality, help="std of the hidden item quality logit")
    parser.add_argument("--no-position-bias", action="store_true", help="every rank is examined")
    parser.add_argument("--epochs", type=int, default=model.epochs, help="two-tower training epochs")
    parser.add_argument("--ranker", action="store_true", help="train and serve the ranker too (slower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("simulation"), help="report directory (default simulation)")
    parser.set_defaults(func=_simulate)


def parse_policy(spec: str) -> Policy:
    """``thompson`` (built in) or ``name:VAR=VALUE,VAR=VALUE`` (a value may hold commas: a part that does not
    start with ``NAME=`` continues the previous value).

    >>> parse_policy("pair:TOWERLIGHT_BANDIT_STRATEGIES=content,popularity,MODEL_REFRESH_SECONDS=1").env
    {'TOWERLIGHT_BANDIT_STRATEGIES': 'content,popularity', 'MODEL_REFRESH_SECONDS': '1'}
    """
    if spec in BUILT_IN_POLICIES:
        return BUILT_IN_POLICIES[spec]
    name, _, assignments = spec.partition(":")
    env: dict[str, str] = {}
    last = None
    for part in assignments.split(","):
        key, eq, value = part.partition("=")
        if eq and _VARIABLE.fullmatch(key.strip()):
            last = key.strip()
            env[last] = value.strip()
        elif last is not None:
            env[last] += "," + part.strip()
        else:
            env = {}
            break
    if not name or not env:
        raise argparse.ArgumentTypeError(f"--policy {spec!r}: not a built-in policy nor NAME:VAR=VALUE[,VAR=VALUE]")
    return Policy(name, env, assignments)


def _simulate(args: argparse.Namespace) -> int:
    try:
        policies = [parse_policy(p) for p in args.policy or BUILT_IN_POLICIES]
    except argparse.ArgumentTypeError as exc:
        console.error(str(exc))
        return 2
    config = SimulationConfig(
        rounds=args.rounds,
        k=args.k,
        warm_users=args.warm_users,
        cold_users=args.cold_users,
        drain_every=args.drain_every,
        duplicate_rate=args.duplicate_rate,
        seed=args.seed,
    )
    world = WorldConfig(
        users=args.users,
        items=args.items,
        events=args.events,
        favourite=args.favourite,
        quality=args.quality,
        position_bias=not args.no_position_bias,
        seed=args.seed,
    )
    model = ModelConfig(epochs=args.epochs, ranker=args.ranker, seed=args.seed)
    result = run_simulation(config, policies, world, model, say=console.say)
    command = "towerlight " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["simulate"] else "towerlight simulate"
    paths = write_report(result, args.out, command=command)
    console.say(console.table(["claim", "met", "figure"], [[c, m, f] for c, m, f in done_when(result)]))
    console.say("written: " + ", ".join(str(p) for p in paths))
    return 0
