"""Schema migrations: numbered plain SQL files (``infra/migrations/0001_init.sql``, ...) applied in order.

Each file runs once, in its own transaction, and is recorded in ``schema_migrations``. A session-level
advisory lock serialises concurrent migrators (two Lambdas, a CLI and a test), so each file is
applied exactly once even when they race.

Example::

    >>> with connect() as conn:
    ...     migrate(conn)
    ['0001_init']
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import psycopg
from psycopg import pq

from towerlight.errors import ConfigurationError

logger = logging.getLogger(__name__)

# Any fixed 64-bit number; it only has to differ from other advisory locks taken on the database.
MIGRATION_LOCK_ID = 7_411_963_020_250_101
_MIGRATION_FILE = re.compile(r"^(\d+)_[\w-]+\.sql$")


def default_migrations_dir() -> Path:
    """``TOWERLIGHT_MIGRATIONS_DIR`` if set, else ``infra/migrations`` of the repository.

    The package is installed editable from the repository, so the directory sits three levels above
    ``towerlight/db``.

    Example::

        >>> default_migrations_dir().name
        'migrations'
    """
    override = os.environ.get("TOWERLIGHT_MIGRATIONS_DIR")
    directory = Path(override) if override else Path(__file__).resolve().parents[3] / "infra" / "migrations"
    if not directory.is_dir():
        raise ConfigurationError(
            f"migrations directory {directory} not found (set TOWERLIGHT_MIGRATIONS_DIR to infra/migrations)"
        )
    return directory


def migration_files(directory: Path) -> list[tuple[str, Path]]:
    """``(version, path)`` of every ``NNNN_name.sql`` file, ordered by number; the version is the stem.

    Example::

        >>> [version for version, _ in migration_files(default_migrations_dir())][:1]
        ['0001_init']
    """
    found: list[tuple[int, str, Path]] = []
    for path in directory.iterdir():
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path))
    numbers = [number for number, _, _ in found]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"two migrations share the number(s) {duplicates} in {directory}")
    return [(version, path) for _, version, path in sorted(found)]


def applied_versions(conn: psycopg.Connection) -> set[str]:
    """Versions recorded in ``schema_migrations`` (empty when the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[str]:
    """Apply the pending migrations of ``directory`` (default: ``default_migrations_dir()``) in order.

    Returns the versions applied by this call (``[]`` when the schema is up to date). The connection
    must not be inside a transaction; it is left idle.

    Example::

        >>> migrate(conn)
        ['0001_init']
        >>> migrate(conn)
        []
    """
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ValueError("migrate() needs a connection outside a transaction (commit or roll back first)")
    files = migration_files(directory or default_migrations_dir())
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_ID])
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = applied_versions(conn)
        for version, path in files:
            if version in done:
                continue
            logger.info("applying migration %s", version)
            with conn.transaction():
                # bytes: the simple query protocol, which runs a file of several statements
                conn.execute(path.read_text(encoding="utf-8").encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [version])
            applied.append(version)
    finally:
        if not (conn.closed or conn.broken):  # a lost session releases its locks by itself
            with conn.transaction():
                conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_ID])
    return applied
