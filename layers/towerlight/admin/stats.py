"""Operator statistics from the events table: volumes per type and day, click-through, popular items, one user.

CTR here is recommendation click-through: clicks that carry a ``recommendation_id`` (the client echoed
the id a recommendation response gave it) divided by ``impression`` events, both over the window.

Example::

    >>> event_stats(conn, days=7, top=5)["ctr"]
    {'impressions': 1200, 'clicks': 310, 'attributed_clicks': 96, 'ctr': 0.08}
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from towerlight.db.events import removed_items
from towerlight.errors import NotFoundError
from towerlight.event_types import POSITIVE_EVENT_TYPES

MAX_DAYS = 366

_PER_TYPE_AND_DAY = (
    "SELECT (ts AT TIME ZONE 'UTC')::date AS day, event_type, count(*) FROM events"
    " WHERE ts >= %(since)s AND ts < %(until)s GROUP BY 1, 2 ORDER BY 1, 2"
)
_CTR_PER_DAY = (
    "SELECT (ts AT TIME ZONE 'UTC')::date AS day,"
    " count(*) FILTER (WHERE event_type = 'impression'),"
    " count(*) FILTER (WHERE event_type = 'click'),"
    " count(*) FILTER (WHERE event_type = 'click' AND recommendation_id IS NOT NULL)"
    " FROM events WHERE ts >= %(since)s AND ts < %(until)s AND event_type IN ('impression', 'click')"
    " GROUP BY 1 ORDER BY 1"
)
_POPULAR = (
    "SELECT e.item_id, i.title, count(*) AS events, count(DISTINCT e.user_id) AS users FROM events e"
    " LEFT JOIN items i USING (item_id)"
    " WHERE e.ts >= %(since)s AND e.ts < %(until)s AND e.event_type = ANY(%(positive)s)"
    " GROUP BY e.item_id, i.title ORDER BY events DESC, users DESC, e.item_id LIMIT %(top)s"
)
_USER_TYPES = "SELECT event_type, count(*), min(ts), max(ts) FROM events WHERE user_id = %s GROUP BY 1 ORDER BY 1"
_USER_RECENT = (
    "SELECT event_id, item_id, event_type, value, ts, recommendation_id FROM events"
    " WHERE user_id = %s ORDER BY ts DESC, event_id LIMIT %s"
)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def _day(value: date) -> str:
    return value.isoformat()


def stats_window(days: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    """``[since, until)``: the last ``days`` whole UTC days up to and including today.

    >>> stats_window(1, datetime(2026, 11, 22, 15, 0, tzinfo=UTC))
    (datetime.datetime(2026, 11, 22, 0, 0, tzinfo=datetime.timezone.utc), datetime.datetime(2026, 11, 23, ...))
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be in 1..{MAX_DAYS}, got {days}")
    today = (now or datetime.now(UTC)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1), today + timedelta(days=1)


def event_stats(
    conn: psycopg.Connection, *, days: int = 30, top: int = 20, now: datetime | None = None
) -> dict[str, Any]:
    """Events per type and day, CTR (overall and per day) and the ``top`` items by positive events."""
    since, until = stats_window(days, now)
    params = {"since": since, "until": until, "positive": list(POSITIVE_EVENT_TYPES), "top": top}
    with conn.transaction():
        per_type = conn.execute(_PER_TYPE_AND_DAY, params).fetchall()
        ctr_rows = conn.execute(_CTR_PER_DAY, params).fetchall()
        popular = conn.execute(_POPULAR, params).fetchall()

    totals: dict[str, int] = {}
    for _, event_type, count in per_type:
        totals[event_type] = totals.get(event_type, 0) + count
    impressions = sum(row[1] for row in ctr_rows)
    clicks = sum(row[2] for row in ctr_rows)
    attributed = sum(row[3] for row in ctr_rows)
    return {
        "window": {"since": since.isoformat(), "until": until.isoformat(), "days": days},
        "totals": dict(sorted(totals.items())),
        "events_per_day": [
            {"day": _day(day), "event_type": event_type, "events": count} for day, event_type, count in per_type
        ],
        "ctr": {
            "impressions": impressions,
            "clicks": clicks,
            "attributed_clicks": attributed,
            "ctr": _ratio(attributed, impressions),
            "per_day": [
                {"day": _day(day), "impressions": imp, "attributed_clicks": att, "ctr": _ratio(att, imp)}
                for day, imp, _, att in ctr_rows
            ],
        },
        "popular_items": [
            {"item_id": item_id, "title": title, "events": events, "users": users}
            for item_id, title, events, users in popular
        ],
    }


def user_stats(conn: psycopg.Connection, user_id: str, *, recent: int = 20) -> dict[str, Any]:
    """One user's event counts per type, first/last seen, latest events and removed items.

    Removed items are those serving never recommends to the user again (``towerlight.db.removed_items``).

    Raises ``NotFoundError`` for a user with no events and no stored attributes.
    """
    with conn.transaction():
        per_type = conn.execute(_USER_TYPES, [user_id]).fetchall()
        attributes = conn.execute("SELECT attributes FROM users WHERE user_id = %s", [user_id]).fetchone()
        latest = conn.execute(_USER_RECENT, [user_id, recent]).fetchall() if per_type else []
        removed = sorted(removed_items(conn, user_id)) if per_type else []
    if not per_type and attributes is None:
        raise NotFoundError(f"user {user_id!r} has no events and no attributes", {"user_id": user_id})
    return {
        "user_id": user_id,
        "attributes": dict(attributes[0]) if attributes else {},
        "events": {event_type: count for event_type, count, _, _ in per_type},
        "total_events": sum(count for _, count, _, _ in per_type),
        "first_seen": min(row[2] for row in per_type).isoformat() if per_type else None,
        "last_seen": max(row[3] for row in per_type).isoformat() if per_type else None,
        "recent_events": [
            {
                "event_id": str(event_id),
                "item_id": item_id,
                "event_type": event_type,
                "value": value,
                "timestamp": ts.isoformat(),
                "recommendation_id": recommendation_id,
            }
            for event_id, item_id, event_type, value, ts, recommendation_id in latest
        ],
        "removed_items": removed,
    }
