"""Real Postgres for tests: one server and database per session, one fresh migrated schema per test.

The server is ``TOWERLIGHT_TEST_DATABASE_URL`` when set (its role needs CREATEDB), else an embedded
``pgserver`` in a temporary directory that is deleted at the end of the session. Each test gets its
own schema (selected through ``search_path`` in the URL), which is much cheaper than a database.

Example::

    def test_something(db):
        with db.transaction():
            insert_events(db, rows)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from towerlight.config import get_settings
from towerlight.db.connection import close_shared_connection, connect
from towerlight.db.migrate import migrate
from towerlight_offline.local.postgres import start_embedded_postgres, with_database, with_search_path


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The URL of the test server's maintenance database (``postgres``)."""
    url = os.environ.get("TOWERLIGHT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: concurrent pytest sessions prune old basetemps, and a server whose
    # data directory vanishes dies mid-session. A short path also keeps the Unix socket path legal.
    root = Path(tempfile.mkdtemp(prefix="towerlight-pg-"))
    server, url = start_embedded_postgres(root / "data", cleanup_mode="delete")
    with psycopg.connect(url, autocommit=True) as admin:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):  # a throwaway server
            admin.execute(f"ALTER SYSTEM SET {setting} = off".encode())
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def session_database_url(database_url: str) -> Iterator[str]:
    """A database of its own for this test session (dropped at the end)."""
    name = f"towerlight_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield with_database(database_url, name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _set_database_url(value: str | None) -> None:
    if value is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = value
    get_settings.cache_clear()
    close_shared_connection()


@pytest.fixture
def db_url(session_database_url: str) -> Iterator[str]:
    """A fresh, migrated schema for this test (dropped afterwards); ``DATABASE_URL`` points at it."""
    schema = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(session_database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"'.encode())
    url = with_search_path(session_database_url, schema)
    previous = os.environ.get("DATABASE_URL")
    _set_database_url(url)
    try:
        with connect() as conn:
            migrate(conn)
        yield url
    finally:
        _set_database_url(previous)
        _drop_schema(session_database_url, schema)


def _drop_schema(url: str, schema: str) -> None:
    drop = f'DROP SCHEMA "{schema}" CASCADE'.encode()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SET lock_timeout = '1s'")
        try:
            admin.execute(drop)
        except psycopg.errors.LockNotAvailable:
            # a session the test leaked still holds locks in the schema: end this database's other sessions
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            admin.execute(drop)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """A connection (autocommit off) to this test's fresh schema."""
    with connect() as conn:
        yield conn


@pytest.fixture
def migrations_dir() -> Path:
    """The repository's migrations (``infra/migrations``)."""
    return Path(__file__).resolve().parents[1] / "infra" / "migrations"
