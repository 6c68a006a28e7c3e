"""``towerlight data fetch movielens-100k``: download the public dataset into the user cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from towerlight_offline import console
from towerlight_offline.data.movielens import fetch_movielens_100k


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="public datasets")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="fetch a dataset into the cache (never into the repository)")
    fetch.add_argument("dataset", choices=["movielens-100k"])
    fetch.add_argument("--dir", type=Path, default=None, help="cache directory (default: user cache dir)")
    fetch.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    path = fetch_movielens_100k(args.dir)
    console.say(f"MovieLens-100K ready in {path}")
    console.say(
        f"import it with: towerlight import --interactions {path / 'interactions.csv'} "
        f"--items {path / 'items.csv'} --users {path / 'users.csv'}"
    )
    return 0
