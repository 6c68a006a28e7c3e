"""The item catalogue and user attributes in Postgres: bulk upserts (COPY + ON CONFLICT) and lookups.

Example::

    >>> upsert_items(conn, [ItemRow("i1", "Toy Story", ["Animation"], {"year": 1995})])
    UpsertCount(inserted=1, updated=0)
    >>> set_item_active(conn, "i1", False)
    >>> inactive_items(conn)
    {'i1'}
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from towerlight.errors import NotFoundError

_ITEM_COLUMNS = (
    ("item_id", "text NOT NULL"),
    ("title", "text"),
    ("categories", "text[] NOT NULL"),
    ("attributes", "jsonb NOT NULL"),
    ("active", "bool"),
)
_USER_COLUMNS = (("user_id", "text NOT NULL"), ("attributes", "jsonb NOT NULL"))

# An item missing from the upsert's `active` (None) keeps its stored flag; a new one starts active.
_UPSERT_ITEMS = (
    "INSERT INTO items (item_id, title, categories, attributes, active)"
    " SELECT s.item_id, s.title, s.categories, s.attributes, COALESCE(s.active, i.active, true)"
    " FROM pg_temp.towerlight_items_in s LEFT JOIN items i USING (item_id)"
    " ON CONFLICT (item_id) DO UPDATE SET"
    " title = excluded.title, categories = excluded.categories, attributes = excluded.attributes,"
    " active = excluded.active, updated_at = now()"
    " WHERE (items.title, items.categories, items.attributes, items.active)"
    " IS DISTINCT FROM (excluded.title, excluded.categories, excluded.attributes, excluded.active)"
    " RETURNING (xmax = 0)"
)
_UPSERT_USERS = (
    "INSERT INTO users (user_id, attributes) SELECT user_id, attributes FROM pg_temp.towerlight_users_in"
    " ON CONFLICT (user_id) DO UPDATE SET attributes = excluded.attributes, updated_at = now()"
    " WHERE users.attributes IS DISTINCT FROM excluded.attributes"
    " RETURNING (xmax = 0)"
)


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One catalogue item. ``active=None`` keeps the stored flag (new items start active)."""

    item_id: str
    title: str | None = None
    categories: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    active: bool | None = None


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user's attributes, e.g. ``UserRow("u1", {"age": 24, "gender": "M"})``."""

    user_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpsertCount:
    """Rows written by an upsert; rows identical to the stored ones are neither (left untouched)."""

    inserted: int
    updated: int


def _upsert(
    conn: psycopg.Connection,
    staging: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[tuple[Any, ...]],
    upsert: str,
) -> UpsertCount:
    """COPY ``rows`` into the temporary table ``staging`` (``columns``: name, type), then run ``upsert``."""
    names = ", ".join(name for name, _ in columns)
    ddl = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
    create = f"DROP TABLE IF EXISTS {staging}; CREATE TEMPORARY TABLE {staging} ({ddl}) ON COMMIT DROP"
    scope = conn.transaction() if conn.autocommit else contextlib.nullcontext()
    with scope, conn.cursor() as cur:
        cur.execute(create.encode())  # constants only: table and column names, never values
        with cur.copy(f"COPY {staging} ({names}) FROM STDIN".encode()) as copy:
            copy.set_types([sql_type.removesuffix(" NOT NULL") for _, sql_type in columns])
            for row in rows:
                copy.write_row(row)
        cur.execute(upsert)
        flags = [r[0] for r in cur.fetchall()]
        cur.execute(f"DROP TABLE {staging}".encode())
    inserted = sum(flags)
    return UpsertCount(inserted=inserted, updated=len(flags) - inserted)


def upsert_items(conn: psycopg.Connection, items: Iterable[ItemRow]) -> UpsertCount:
    """Insert new items and update changed ones (the last row wins when an id repeats).

    The caller controls the transaction, as with ``insert_events``.

    Example::

        >>> upsert_items(conn, [ItemRow("i1", "Heat", ["Action", "Crime"], {"year": 1995})])
        UpsertCount(inserted=1, updated=0)
    """
    latest = {item.item_id: item for item in items}
    if not latest:
        return UpsertCount(0, 0)
    rows = ((i.item_id, i.title, list(i.categories), Jsonb(dict(i.attributes)), i.active) for i in latest.values())
    return _upsert(conn, "pg_temp.towerlight_items_in", _ITEM_COLUMNS, rows, _UPSERT_ITEMS)


def upsert_users(conn: psycopg.Connection, users: Iterable[UserRow]) -> UpsertCount:
    """Insert new users and update changed attributes (the last row wins when an id repeats).

    Example::

        >>> upsert_users(conn, [UserRow("u1", {"age": 24})])
        UpsertCount(inserted=1, updated=0)
    """
    latest = {user.user_id: user for user in users}
    if not latest:
        return UpsertCount(0, 0)
    rows = ((u.user_id, Jsonb(dict(u.attributes))) for u in latest.values())
    return _upsert(conn, "pg_temp.towerlight_users_in", _USER_COLUMNS, rows, _UPSERT_USERS)


def inactive_items(conn: psycopg.Connection) -> set[str]:
    """Ids of the items marked inactive (never recommended).

    Example::

        >>> inactive_items(conn)
        {'i1'}
    """
    return {row[0] for row in conn.execute("SELECT item_id FROM items WHERE NOT active")}


def set_item_active(conn: psycopg.Connection, item_id: str, active: bool) -> None:
    """Mark an item active or inactive; ``NotFoundError`` when the catalogue has no such item.

    Example::

        >>> set_item_active(conn, "i1", False)
    """
    cursor = conn.execute(
        "UPDATE items SET active = %s, updated_at = now() WHERE item_id = %s", [bool(active), item_id]
    )
    if cursor.rowcount == 0:
        raise NotFoundError(f"unknown item {item_id!r}", details={"item_id": item_id})
