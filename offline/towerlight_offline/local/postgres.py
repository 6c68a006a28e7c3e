"""A real local Postgres without installing one: ``DATABASE_URL`` when given, else embedded ``pgserver``.

The embedded server keeps its data in ``platformdirs.user_data_dir("towerlight")/pgdata`` (or
``TOWERLIGHT_PGDATA``), listens only on a Unix socket, and stops when the last Python process using it
exits; the data stays for the next run.

Example::

    >>> url = ensure_database_url()
    >>> os.environ["DATABASE_URL"] == url
    True
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from towerlight.config import get_settings

logger = logging.getLogger(__name__)

CleanupMode = Literal["stop", "delete"] | None


def default_pgdata() -> Path:
    """``TOWERLIGHT_PGDATA`` if set, else ``<user data dir>/towerlight/pgdata``.

    Example::

        >>> default_pgdata().name
        'pgdata'
    """
    override = os.environ.get("TOWERLIGHT_PGDATA")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("towerlight")) / "pgdata"


def start_embedded_postgres(pgdata: Path, *, cleanup_mode: CleanupMode = "stop") -> tuple[Any, str]:
    """Start (or join) the ``pgserver`` Postgres whose data lives in ``pgdata``; returns ``(server, url)``.

    ``cleanup_mode``: ``"stop"`` stops the server when the last process using it exits, ``"delete"``
    also removes ``pgdata`` (for tests), ``None`` leaves it running. The URL names the ``postgres``
    database over the server's Unix socket, percent-encoded so any socket path is a valid URI.

    Example::

        >>> server, url = start_embedded_postgres(Path("/tmp/pg"), cleanup_mode="delete")
        >>> url
        'postgresql://postgres@/postgres?host=%2Ftmp%2Fpg&port=5432'
    """
    with warnings.catch_warnings():  # pgserver asks platformdirs for XDG_RUNTIME_DIR at import
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # deferred: a few hundred ms of import, only needed without DATABASE_URL

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    logger.info("starting embedded Postgres in %s", pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
    info = server.get_postmaster_info()
    if info.socket_dir is None:
        url = server.get_uri()
    else:
        host = urllib.parse.quote(str(info.socket_dir), safe="")
        url = f"postgresql://postgres@/postgres?host={host}&port={info.port or 5432}"
    return server, url


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials as ``url``, another database; URIs stay URIs.

    Example::

        >>> with_database("postgresql://postgres@/postgres?host=%2Ftmp%2Fpg", "test_1")
        'postgresql://postgres@/test_1?host=%2Ftmp%2Fpg'
    """
    if url.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(dbname, safe="")))
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def with_search_path(url: str, schema: str) -> str:
    """``url`` with the session option ``search_path=<schema>``, so unqualified names live in ``schema``.

    Example::

        >>> with_search_path("postgresql://postgres@/db?host=%2Ftmp%2Fpg", "test_1")
        'postgresql://postgres@/db?host=%2Ftmp%2Fpg&options=-c%20search_path%3Dtest_1'
    """
    option = f"-c search_path={schema}"
    if url.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(url)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "options"]
        # quote (%20), not quote_plus: libpq does not read "+" as a space
        text = urllib.parse.urlencode([*query, ("options", option)], quote_via=urllib.parse.quote)
        return urllib.parse.urlunsplit(parts._replace(query=text))
    return make_conninfo(url, options=option)


def ensure_database_url() -> str:
    """``DATABASE_URL`` if set; otherwise start the embedded Postgres, export its URL and return it.

    Example::

        >>> ensure_database_url()
        'postgresql://postgres@/postgres?host=%2Froot%2F.local%2Fshare%2Ftowerlight%2Fpgdata&port=5432'
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    _, url = start_embedded_postgres(default_pgdata())
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()  # settings are read once per process; this one just changed
    return url
