"""Interaction events in Postgres: the one write path (COPY + ON CONFLICT) and the per-user reads.

``insert_events`` is used by both the importer and the SQS ingest function. It returns the ids of the
rows it actually inserted, so at-least-once delivery never counts an event twice downstream.

Example::

    >>> row = EventRow(str(uuid.uuid4()), "u1", "i9", "click", None, datetime.now(UTC), None, None)
    >>> with conn.transaction():
    ...     insert_events(conn, [row, row])
    ['9b0c...']
    >>> [e.item_id for e in recent_history(conn, "u1", 10)]
    ['i9']
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from towerlight.event_types import REMOVING_EVENT_TYPES

_STAGE_EVENTS = (
    b"DROP TABLE IF EXISTS pg_temp.towerlight_events_in; "
    b"CREATE TEMPORARY TABLE pg_temp.towerlight_events_in ("
    b" event_id uuid NOT NULL, user_id text NOT NULL, item_id text NOT NULL, event_type text NOT NULL,"
    b" value double precision, ts timestamptz NOT NULL, recommendation_id text, context jsonb"
    b") ON COMMIT DROP"
)
_COPY_EVENTS = (
    "COPY pg_temp.towerlight_events_in"
    " (event_id, user_id, item_id, event_type, value, ts, recommendation_id, context) FROM STDIN"
)
_INSERT_EVENTS = (
    "INSERT INTO events (event_id, user_id, item_id, event_type, value, ts, recommendation_id, context)"
    " SELECT event_id, user_id, item_id, event_type, value, ts, recommendation_id, context"
    " FROM pg_temp.towerlight_events_in"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING event_id::text"
)
# event_id goes as text: the server parses (and validates) it into the uuid column.
_COPY_TYPES = ("text", "text", "text", "text", "float8", "timestamptz", "text", "jsonb")

# One round trip for serving: the latest events, then every item the user removed (flag = true).
_HISTORY_AND_REMOVED = """
WITH recent AS (
    SELECT item_id, event_type, value, ts, received_at
    FROM events WHERE user_id = %(user_id)s
    ORDER BY ts DESC, received_at DESC
    LIMIT %(limit)s
), removed AS (
    SELECT DISTINCT item_id FROM events
    WHERE user_id = %(user_id)s AND event_type = ANY(%(removing)s)
)
SELECT false AS removed, item_id, event_type, value, ts, received_at FROM recent
UNION ALL
SELECT true, item_id, NULL, NULL, NULL, NULL FROM removed
ORDER BY removed, ts DESC, received_at DESC
"""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One interaction to store. ``event_id`` is a UUID string; ``ts`` must be timezone-aware."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    value: float | None
    ts: datetime
    recommendation_id: str | None = None
    context: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise ValueError(f"event {self.event_id}: ts must be timezone-aware, got {self.ts!r}")


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One past event of a user, as serving reads it."""

    item_id: str
    event_type: str
    value: float | None
    ts: datetime


def insert_events(conn: psycopg.Connection, rows: Sequence[EventRow]) -> list[str]:
    """Insert ``rows``, skipping any ``event_id`` already stored or repeated in the batch.

    Returns the ids (canonical lower-case UUID strings) of the rows actually inserted; an ``event_id``
    that is not a UUID fails the whole batch (validate first). The caller controls the transaction:
    nothing is committed here (on an autocommit connection the call runs in its own transaction).
    Several calls may share one transaction.

    Example::

        >>> new = insert_events(conn, rows)
        >>> update_bandits(conn, [r for r in rows if r.event_id in set(new)])
        >>> conn.commit()
    """
    if not rows:
        return []
    scope = conn.transaction() if conn.autocommit else contextlib.nullcontext()
    with scope, conn.cursor() as cur:
        cur.execute(_STAGE_EVENTS)
        with cur.copy(_COPY_EVENTS) as copy:
            copy.set_types(list(_COPY_TYPES))
            for row in rows:
                copy.write_row(
                    (
                        row.event_id,
                        row.user_id,
                        row.item_id,
                        row.event_type,
                        row.value,
                        row.ts,
                        row.recommendation_id,
                        None if row.context is None else Jsonb(row.context),
                    )
                )
        cur.execute(_INSERT_EVENTS)
        inserted = [r[0] for r in cur.fetchall()]
        # Dropped now (not only at commit) so another call in the same transaction starts empty.
        cur.execute("DROP TABLE pg_temp.towerlight_events_in")
    return inserted


def history_and_removed(conn: psycopg.Connection, user_id: str, limit: int) -> tuple[list[HistoryEvent], set[str]]:
    """The user's ``limit`` most recent events (newest first) and the items they removed, in one query.

    An item is removed once the user sent any event whose type removes it (``dislike``, ``block``:
    ``towerlight.event_types.REMOVING_EVENT_TYPES``), however old.

    Example::

        >>> history, removed = history_and_removed(conn, "u1", 50)
        >>> [e.item_id for e in history], removed
        (['i3', 'i9'], {'i7'})
    """
    params = {"user_id": user_id, "limit": max(0, int(limit)), "removing": list(REMOVING_EVENT_TYPES)}
    history: list[HistoryEvent] = []
    removed: set[str] = set()
    for is_removed, item_id, event_type, value, ts, _ in conn.execute(_HISTORY_AND_REMOVED, params):
        if is_removed:
            removed.add(item_id)
        else:
            history.append(HistoryEvent(item_id, event_type, value, ts))
    return history, removed


def recent_history(conn: psycopg.Connection, user_id: str, limit: int) -> list[HistoryEvent]:
    """The user's ``limit`` most recent events, newest first (ties: the later received first).

    Example::

        >>> [(e.item_id, e.event_type) for e in recent_history(conn, "u1", 2)]
        [('i3', 'click'), ('i9', 'view')]
    """
    cursor = conn.execute(
        "SELECT item_id, event_type, value, ts FROM events WHERE user_id = %s"
        " ORDER BY ts DESC, received_at DESC LIMIT %s",
        [user_id, max(0, int(limit))],
    )
    return [HistoryEvent(*row) for row in cursor]


def removed_items(conn: psycopg.Connection, user_id: str) -> set[str]:
    """Items the user removed with a ``dislike``/``block`` (any ``REMOVING_EVENT_TYPES`` event).

    Example::

        >>> removed_items(conn, "u1")
        {'i7'}
    """
    cursor = conn.execute(
        "SELECT DISTINCT item_id FROM events WHERE user_id = %s AND event_type = ANY(%s)",
        [user_id, list(REMOVING_EVENT_TYPES)],
    )
    return {row[0] for row in cursor}
