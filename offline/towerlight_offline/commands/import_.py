"""``towerlight import``: load interactions (and items/users) from CSV or Parquet into Postgres."""

from __future__ import annotations

import argparse
from pathlib import Path

from towerlight.db.connection import connect
from towerlight.db.migrate import migrate
from towerlight_offline import console
from towerlight_offline.data.importer import import_files
from towerlight_offline.local.postgres import ensure_database_url


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("import", help="load CSV/Parquet files into Postgres (validated, idempotent)")
    parser.add_argument("--interactions", type=Path, required=True, help="user_id,item_id,timestamp[,event_type,value]")
    parser.add_argument("--items", type=Path, help="item_id,title,categories plus attribute columns")
    parser.add_argument("--users", type=Path, help="user_id plus attribute columns")
    parser.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    ensure_database_url()
    with connect() as conn:
        migrate(conn)
        report = import_files(conn, args.interactions, args.items, args.users)
    console.say(report.summary())
    return 0
