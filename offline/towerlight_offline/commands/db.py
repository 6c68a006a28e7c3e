"""``towerlight db migrate``: apply the numbered SQL migrations in infra/migrations."""

from __future__ import annotations

import argparse
from pathlib import Path

from towerlight.db.connection import connect
from towerlight.db.migrate import default_migrations_dir, migrate
from towerlight_offline import console
from towerlight_offline.local.postgres import ensure_database_url


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="database schema")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("migrate", help="apply pending migrations (DATABASE_URL or embedded Postgres)")
    run.add_argument("--dir", type=Path, default=None, help="migrations directory (default infra/migrations)")
    run.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    ensure_database_url()
    directory = args.dir or default_migrations_dir()
    with connect() as conn:
        applied = migrate(conn, directory)
    console.say(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "schema up to date")
    return 0
