"""Benchmarks of the serving path (``towerlight bench serve``) and the ingest path (``towerlight bench ingest``).

Each benchmark drives the real Lambda handlers with real events against a real local stack, measures a
baseline in the same run, and writes ``bench-results/<name>-<timestamp>.json`` and ``.md``
(``towerlight_offline.bench.report``). This module holds what both share: the local stack and the
process-wide state they reset.

Example::

    >>> with local_stack(s3_bucket="towerlight-bench") as stack:
    ...     stack.database_url, stack.store_uri
    ('postgresql://postgres@/postgres?host=...&options=-c%20search_path%3Dtowerlight_bench_1f2e', 's3://...')
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from towerlight.config import get_settings
from towerlight.db.connection import close_shared_connection
from towerlight.db.migrate import migrate

logger = logging.getLogger(__name__)

# Postgres settings worth knowing beside a throughput figure.
PG_SETTINGS = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level")


@dataclass
class LocalStack:
    """What a benchmark runs against: a fresh migrated schema, and an S3 store when one was asked for."""

    database_url: str  # selects the benchmark's own schema through search_path
    server_url: str  # the same server without the schema (for more schemas: ``fresh_schema``)
    postgres: str  # "embedded (pgserver, <dir>)" or "DATABASE_URL"
    postgres_settings: dict[str, str]
    store_uri: str | None = None
    s3_endpoint: str | None = None
    scratch: Path = field(default_factory=Path)  # a temporary directory, deleted with the stack


def reset_process_state() -> None:
    """Forget the cached settings, connection, registry and service, so the environment is read again."""
    from towerlight.model import registry
    from towerlight.recommend.service import get_service

    close_shared_connection()
    get_settings.cache_clear()
    get_service.cache_clear()
    registry.reset()


@contextlib.contextmanager
def patched_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or unset, for None) environment variables for the ``with`` block, then restore them."""
    previous = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_process_state()
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_process_state()


@contextlib.contextmanager
def local_stack(*, s3_bucket: str | None = None) -> Iterator[LocalStack]:
    """Postgres with a fresh migrated schema, plus moto's S3 endpoint and a bucket when ``s3_bucket`` is given.

    Postgres is the server of ``DATABASE_URL`` when set (the schema ``towerlight_bench_<hex>`` is created
    there and dropped afterwards), else an embedded one in a temporary directory, with its default
    (durable) settings. ``DATABASE_URL``, ``TOWERLIGHT_STORE`` and the AWS endpoint variables point at the
    stack inside the block and are restored after it.
    """
    from towerlight_offline.local.moto_server import ensure_bucket, env_for_endpoint, start_moto_server
    from towerlight_offline.local.postgres import start_embedded_postgres

    with contextlib.ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="towerlight-bench-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        server_url = os.environ.get("DATABASE_URL")
        postgres = "DATABASE_URL"
        if not server_url:
            server, server_url = start_embedded_postgres(scratch / "pg", cleanup_mode="delete")
            stack.callback(server.cleanup)
            postgres = f"embedded (pgserver, {scratch / 'pg'})"
        with psycopg.connect(server_url, autocommit=True) as admin:
            settings = {name: str(admin.execute(f"SHOW {name}".encode()).fetchone()[0]) for name in PG_SETTINGS}
        url, schema = stack.enter_context(fresh_schema(server_url))
        stack.enter_context(patched_environ({"DATABASE_URL": url}))
        store_uri = endpoint = None
        if s3_bucket is not None:
            moto = stack.enter_context(start_moto_server())
            endpoint = moto.endpoint_url
            store_uri = f"s3://{s3_bucket}/{schema}"
            stack.enter_context(patched_environ({**env_for_endpoint(endpoint), "TOWERLIGHT_STORE": store_uri}))
            ensure_bucket(s3_bucket, endpoint_url=endpoint)
        yield LocalStack(url, server_url, postgres, settings, store_uri, endpoint, scratch)


@contextlib.contextmanager
def fresh_schema(server_url: str, prefix: str = "towerlight_bench") -> Iterator[tuple[str, str]]:
    """A new migrated schema ``<prefix>_<hex>`` on ``server_url``, dropped after the block.

    Yields the URL that selects it (through ``search_path``) and its name.
    """
    from towerlight_offline.local.postgres import with_search_path

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"'.encode())
    try:
        url = with_search_path(server_url, schema)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield url, schema
    finally:
        _drop_schema(server_url, schema)


def _drop_schema(server_url: str, schema: str) -> None:
    close_shared_connection()
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
    except psycopg.Error as exc:  # the embedded server may already be gone: nothing left to drop
        logger.warning("could not drop the benchmark schema %s: %s", schema, exc)


def lambda_env() -> dict[str, str | None]:
    """Powertools settings for timing handlers: tracing off (there is no X-Ray daemon here); logs and EMF
    metrics stay on, as in Lambda, and the benchmarks send them to a null stream."""
    return {"POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "TowerlightBench"}


@contextlib.contextmanager
def discarded_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the block: a handler's JSON logs and EMF metrics (written to
    stdout, as Lambda expects) then cost what a pipe costs, and do not flood the terminal.

    At the descriptor level, because Powertools' logger keeps the ``sys.stdout`` it found at import.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
