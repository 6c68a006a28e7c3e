"""Postgres access for the runtime: connections, migrations, events and the catalogue (psycopg 3 only).

Example::

    >>> from towerlight.db import shared_connection, history_and_removed
    >>> conn = shared_connection()
    >>> with conn.transaction():
    ...     history, removed, _ = history_and_removed(conn, "u1", 50)
"""

from __future__ import annotations

from towerlight.db.catalog import (
    ItemRow,
    UpsertCount,
    UserRow,
    inactive_items,
    set_item_active,
    upsert_items,
    upsert_users,
)
from towerlight.db.connection import close_shared_connection, connect, database_url, shared_connection
from towerlight.db.events import (
    EventRow,
    HistoryEvent,
    history_and_removed,
    insert_events,
    recent_history,
    removed_items,
)
from towerlight.db.migrate import default_migrations_dir, migrate

__all__ = [
    "EventRow",
    "HistoryEvent",
    "ItemRow",
    "UpsertCount",
    "UserRow",
    "close_shared_connection",
    "connect",
    "database_url",
    "default_migrations_dir",
    "history_and_removed",
    "inactive_items",
    "insert_events",
    "migrate",
    "recent_history",
    "removed_items",
    "set_item_active",
    "shared_connection",
    "upsert_items",
    "upsert_users",
]
