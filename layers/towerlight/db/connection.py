"""Postgres connections: where the database is, a fresh connection, and the per-process shared one.

The database is ``DATABASE_URL`` when set, else the RDS secret named by ``DATABASE_SECRET_ARN``
(Secrets Manager JSON ``{username, password, host, port, dbname}``). Lambda keeps one connection per
thread (``shared_connection``) across warm invocations and reconnects when it was closed or broke.

Example::

    >>> with connect(timeout_ms=200) as conn:
    ...     conn.execute("SELECT 1").fetchone()
    (1,)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from towerlight.config import get_settings
from towerlight.db.secrets import read_secret_string
from towerlight.errors import ConfigurationError, DatabaseUnavailableError

logger = logging.getLogger(__name__)

# libpq's smallest effective value: an unreachable database costs a request 2 s before it degrades.
CONNECT_TIMEOUT_SECONDS = 2
# A connection idle for longer than this is pinged before reuse: a frozen Lambda may wake up to a
# connection the server or a NAT dropped long ago, which psycopg only notices on the next query.
PING_AFTER_IDLE_SECONDS = 30.0


class _SharedConnection(threading.local):
    """One connection per thread: Lambda has one thread; `towerlight serve` runs the API and a worker."""

    conn: psycopg.Connection | None = None
    key: tuple[str, int | None] | None = None
    last_used = 0.0


_shared = _SharedConnection()


@lru_cache(maxsize=4)
def _secret_conninfo(secret_arn: str) -> str:
    try:
        raw = read_secret_string(secret_arn)  # one signed POST, without boto3, where the environment allows
        if raw is None:
            import boto3  # deferred: only this path needs it

            raw = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
        secret = json.loads(raw)
        return make_conninfo(
            host=secret["host"],
            port=str(secret.get("port", 5432)),
            user=secret["username"],
            password=secret["password"],
            dbname=secret.get("dbname") or "postgres",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"secret {secret_arn} is not an RDS secret with username, password, host, port and dbname"
        ) from exc
    except Exception as exc:  # botocore raises many unrelated types; all mean "cannot read the secret"
        raise DatabaseUnavailableError(f"cannot read database secret {secret_arn}: {exc}") from exc


def database_url() -> str:
    """The connection string: ``DATABASE_URL``, else the one built from ``DATABASE_SECRET_ARN`` (cached).

    Raises ``ConfigurationError`` when neither is set.

    Example::

        >>> os.environ["DATABASE_URL"] = "postgresql://app@localhost/towerlight"
        >>> database_url()
        'postgresql://app@localhost/towerlight'
    """
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    if settings.database_secret_arn:
        return _secret_conninfo(settings.database_secret_arn)
    raise ConfigurationError(
        "no database configured: set DATABASE_URL (e.g. postgresql://user:pass@host:5432/db) "
        "or DATABASE_SECRET_ARN (an RDS secret in Secrets Manager)"
    )


def _open(url: str, timeout_ms: int | None) -> psycopg.Connection:
    options: dict[str, Any] = {"autocommit": False}
    if "connect_timeout" not in conninfo_to_dict(url):
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    conn = psycopg.connect(url, **options)
    if timeout_ms is not None:
        try:
            # SET rather than the `options` startup parameter, which poolers such as RDS Proxy reject.
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(timeout_ms)}ms"])
            conn.commit()
        except BaseException:
            conn.close()
            raise
    return conn


def connect(*, timeout_ms: int | None = None, url: str | None = None) -> psycopg.Connection:
    """A new connection (autocommit off), with ``statement_timeout`` set when ``timeout_ms`` is given.

    Connection failures raise ``DatabaseUnavailableError``. The caller closes the connection.

    Example::

        >>> with connect(timeout_ms=500) as conn, conn.transaction():
        ...     conn.execute("SELECT count(*) FROM events").fetchone()
        (0,)
    """
    target = url or database_url()
    try:
        return _open(target, timeout_ms)
    except psycopg.OperationalError as exc:
        failure: psycopg.OperationalError = exc
    settings = get_settings()
    if url is None and not settings.database_url and settings.database_secret_arn:
        # The password may have been rotated since the secret was cached: read it again, once.
        _secret_conninfo.cache_clear()
        fresh = database_url()
        if fresh != target:
            try:
                return _open(fresh, timeout_ms)
            except psycopg.OperationalError as exc:
                failure = exc
    raise DatabaseUnavailableError(f"cannot connect to Postgres: {_first_line(failure)}") from failure


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _usable(conn: psycopg.Connection, idle_seconds: float) -> bool:
    if conn.closed or conn.broken:
        return False
    status = conn.info.transaction_status
    if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        # Left open by a previous invocation: start every unit of work from a clean state, or a
        # later `with conn.transaction()` would only open a savepoint and never commit.
        try:
            conn.rollback()
        except psycopg.Error:
            return False
    if idle_seconds > PING_AFTER_IDLE_SECONDS:
        try:
            conn.execute("SELECT 1")
            conn.rollback()
        except psycopg.Error:
            return False
    return True


def shared_connection(*, timeout_ms: int | None = None) -> psycopg.Connection:
    """The per-process connection, reused across warm Lambda invocations, reopened when unusable.

    Call it once at the start of each unit of work: the connection comes back idle (a transaction
    left open by a previous invocation is rolled back). ``timeout_ms`` defaults to
    ``TOWERLIGHT_DB_TIMEOUT_MS``. Do not close it; ``close_shared_connection()`` does.

    Example::

        >>> conn = shared_connection()
        >>> with conn.transaction():
        ...     history = recent_history(conn, "u1", 50)
    """
    timeout = get_settings().db_timeout_ms if timeout_ms is None else timeout_ms
    key = (database_url(), timeout)
    now = time.monotonic()
    if _shared.conn is not None and (_shared.key != key or not _usable(_shared.conn, now - _shared.last_used)):
        logger.info("reopening the shared database connection")
        close_shared_connection()
    if _shared.conn is None:
        _shared.conn = connect(timeout_ms=timeout)
        _shared.key = key
    _shared.last_used = now
    return _shared.conn


def close_shared_connection() -> None:
    """Close this thread's shared connection, if any (tests call it when they switch databases)."""
    if _shared.conn is not None:
        try:
            _shared.conn.close()
        except psycopg.Error:
            logger.debug("closing a broken shared connection failed", exc_info=True)
    _shared.conn = None
    _shared.key = None
