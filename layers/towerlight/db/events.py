"""Interaction events in Postgres: the one write path (COPY, ON CONFLICT on redelivery) and the per-user reads.

``insert_events`` is used by the importer and the tests; the SQS ingest function writes the same
records with ``copy_events`` / ``insert_new_events`` under its own transaction. Either way an event
is stored once however often it arrives, and the caller learns which events were new, so at-least-once
delivery never counts an event twice downstream.

Example::

    >>> row = EventRow(str(uuid.uuid4()), "u1", "i9", "click", None, datetime.now(UTC), None, None)
    >>> with conn.transaction():
    ...     insert_events(conn, [row, row])
    ['9b0c...']
    >>> [e.item_id for e in recent_history(conn, "u1", 10)]
    ['i9']
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

import psycopg
import pydantic_core
from psycopg.copy import LibpqWriter

from towerlight.event_types import REMOVING_EVENT_TYPES

_COLUMNS = "(event_id, user_id, item_id, event_type, value, ts, recommendation_id, context)"
# The fast path: rows go straight into events, in one COPY (heap multi-insert, no staging table).
_COPY_INTO_EVENTS = f"COPY events {_COLUMNS} FROM STDIN (FORMAT BINARY)"
# The path for batches that repeat stored events: stage, then INSERT ... ON CONFLICT DO NOTHING. The
# stage lives as long as the connection (created by its first redelivery, no index, emptied by each
# insert and truncated at commit): not a CREATE and DROP, with their catalog writes, per batch.
_STAGE_EVENTS = (
    b"CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.towerlight_events_in ("
    b" event_id uuid NOT NULL, user_id text NOT NULL, item_id text NOT NULL, event_type text NOT NULL,"
    b" value double precision, ts timestamptz NOT NULL, recommendation_id text, context jsonb"
    b") ON COMMIT DELETE ROWS"
)
_COPY_INTO_STAGE = f"COPY pg_temp.towerlight_events_in {_COLUMNS} FROM STDIN (FORMAT BINARY)"
_INSERT_STAGED = (
    "WITH staged AS (DELETE FROM pg_temp.towerlight_events_in RETURNING *)"
    f" INSERT INTO events {_COLUMNS}"
    " SELECT event_id, user_id, item_id, event_type, value, ts, recommendation_id, context FROM staged"
    " ORDER BY event_id"  # the lock order of every writer (see copy_events)
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING event_id::text"
)
# Binary COPY: the server no longer parses every uuid, time and number from text (a third of its time
# per row, measured). Each field goes in its column type's binary form; event_id and context are passed
# as raw bytes already in that form: the uuid's 16 bytes, and jsonb's version byte then the JSON text.
_COPY_TYPES = ("bytea", "text", "text", "text", "float8", "timestamptz", "text", "bytea")
_JSONB_VERSION = b"\x01"
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# One event as the binary COPY sends it: (event_id as the uuid's 16 bytes, user_id, item_id, event_type,
# value, ts, recommendation_id, context as jsonb's wire form). A plain tuple: ingest builds thousands.
EventRecord = tuple[bytes, str, str, str, float | None, datetime, str | None, bytes | None]

# One round trip for serving: the latest events, every item the user removed (flag = true), and, when
# asked for, the user's attributes (flag = null, last).
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
SELECT false AS removed, item_id, event_type, value, ts, received_at, NULL::jsonb AS attributes FROM recent
UNION ALL
SELECT true, item_id, NULL, NULL, NULL, NULL, NULL FROM removed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, attributes FROM users
WHERE %(attributes)s AND user_id = %(user_id)s
ORDER BY removed, ts DESC, received_at DESC
"""


# Not frozen: a frozen dataclass's __init__ costs ~4x, and ingest builds thousands per batch.
@dataclass(slots=True)
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
    that is not a UUID fails the whole batch with ``ValueError`` before anything is sent (validate
    first). The caller controls the transaction: nothing is committed here (on an autocommit
    connection the call runs in its own transaction). Several calls may share one transaction.

    New events (the usual case) go straight into ``events`` with one ``COPY`` under a savepoint. Only
    when that meets an ``event_id`` already stored (a redelivery, or a concurrent writer) is the batch
    staged in a temporary table and inserted with ``ON CONFLICT (event_id) DO NOTHING``.

    Example::

        >>> new = insert_events(conn, rows)
        >>> update_bandits(conn, [r for r in rows if r.event_id in set(new)])
        >>> conn.commit()
    """
    if not rows:
        return []
    records: dict[str, EventRecord] = {}
    for row in rows:
        event_id = canonical_event_id(row.event_id)
        if event_id not in records:
            records[event_id] = event_record(
                event_id,
                row.user_id,
                row.item_id,
                row.event_type,
                row.value,
                row.ts,
                row.recommendation_id,
                row.context,
            )
    if conn.autocommit:
        try:
            copy_events(conn, records.values())  # one statement: its own transaction
            return list(records)
        except psycopg.errors.UniqueViolation:
            with conn.transaction():
                return insert_new_events(conn, records.values())
    with conn.cursor() as cur:
        # A plain savepoint, not conn.transaction(): on an idle connection that would COMMIT at exit.
        cur.execute(b"SAVEPOINT towerlight_events_copy")
        try:
            copy_events(conn, records.values())
        except psycopg.errors.UniqueViolation:
            cur.execute(b"ROLLBACK TO SAVEPOINT towerlight_events_copy")
            cur.execute(b"RELEASE SAVEPOINT towerlight_events_copy")
            return insert_new_events(conn, records.values())
        cur.execute(b"RELEASE SAVEPOINT towerlight_events_copy")
    return list(records)


def copy_events(conn: psycopg.Connection, records: Collection[EventRecord]) -> int:
    """COPY ``records`` (distinct event ids) straight into ``events``; returns how many were written (all).

    Raises ``psycopg.errors.UniqueViolation`` when an event is stored already, and then writes nothing:
    the caller rolls back (its transaction or a savepoint) and uses ``insert_new_events``.

    Rows go in event id order, whatever the caller's: two writers given overlapping events (an SQS
    redelivery reaching a second consumer while the first still writes) then take the unique index's
    locks in the same order, and one waits for the other instead of both deadlocking halfway.
    ``insert_new_events`` inserts in the same order.
    """
    with conn.cursor() as cur:
        _copy(cur, _COPY_INTO_EVENTS, sorted(records, key=itemgetter(0)))
    return len(records)


def insert_new_events(conn: psycopg.Connection, records: Collection[EventRecord]) -> list[str]:
    """Insert those of ``records`` not stored yet (``ON CONFLICT DO NOTHING``); returns their ids.

    The path for a batch that repeats stored events: slower than ``copy_events`` for new ones (the
    records are staged in a temporary table first), but it never fails on an event stored already.
    """
    with conn.cursor() as cur:
        cur.execute(_STAGE_EVENTS)
        _copy(cur, _COPY_INTO_STAGE, records)
        cur.execute(_INSERT_STAGED)
        return [r[0] for r in cur.fetchall()]


def canonical_event_id(event_id: str) -> str:
    """``event_id`` as a lower-case hyphenated UUID; ``ValueError`` when it is not a UUID.

    >>> canonical_event_id("5B0E7E0C-1F0A-4C2D-8E3F-4A5B6C7D8E01")
    '5b0e7e0c-1f0a-4c2d-8e3f-4a5b6c7d8e01'
    """
    if _CANONICAL_UUID.fullmatch(event_id):
        return event_id
    try:
        return str(uuid.UUID(event_id))
    except (ValueError, TypeError):
        raise ValueError(f"event_id {event_id!r} is not a UUID") from None


def event_record(
    event_id: str,
    user_id: str,
    item_id: str,
    event_type: str,
    value: float | None,
    ts: datetime,
    recommendation_id: str | None,
    context: dict[str, Any] | None,
) -> EventRecord:
    """The COPY record of one event; ``event_id`` must be canonical (``canonical_event_id``), ``ts`` aware.

    >>> event_record("5b0e7e0c-1f0a-4c2d-8e3f-4a5b6c7d8e01", "u1", "i9", "click", None, ts, None, {"p": 1})[7]
    b'\\x01{"p":1}'
    """
    # pydantic_core's encoder (Rust): ~10x json.dumps on a small dict, and this runs for every event.
    jsonb = None if context is None else _JSONB_VERSION + pydantic_core.to_json(context)
    return (bytes.fromhex(event_id.replace("-", "")), user_id, item_id, event_type, value, ts, recommendation_id, jsonb)


def _copy(cur: psycopg.Cursor[Any], statement: str, records: Collection[EventRecord]) -> None:
    # Flush every block (psycopg waits for 1 MB by default): the server starts inserting before the end.
    with cur.copy(statement, writer=LibpqWriter(cur, flush_threshold=0)) as copy:
        copy.set_types(list(_COPY_TYPES))
        for record in records:
            copy.write_row(record)


def history_and_removed(
    conn: psycopg.Connection, user_id: str, limit: int, *, attributes: bool = False
) -> tuple[list[HistoryEvent], set[str], dict[str, Any] | None]:
    """The user's ``limit`` most recent events (newest first), the items they removed and, with
    ``attributes``, their stored attributes (``{}`` for an unknown user; None when not asked), in one query.

    An item is removed once the user sent any event whose type removes it (``dislike``, ``block``:
    ``towerlight.event_types.REMOVING_EVENT_TYPES``), however old.

    Example::

        >>> history, removed, attributes = history_and_removed(conn, "u1", 50, attributes=True)
        >>> [e.item_id for e in history], removed, attributes
        (['i3', 'i9'], {'i7'}, {'age': 24})
    """
    params = {
        "user_id": user_id,
        "limit": max(0, int(limit)),
        "removing": list(REMOVING_EVENT_TYPES),
        "attributes": attributes,
    }
    history: list[HistoryEvent] = []
    removed: set[str] = set()
    stored: dict[str, Any] | None = {} if attributes else None
    for is_removed, item_id, event_type, value, ts, _, user in conn.execute(_HISTORY_AND_REMOVED, params):
        if is_removed is None:
            stored = dict(user)
        elif is_removed:
            removed.add(item_id)
        else:
            history.append(HistoryEvent(item_id, event_type, value, ts))
    return history, removed, stored


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
