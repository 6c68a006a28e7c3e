"""Promoted items in Postgres: pin an item at a page position, or boost it up the page, for a time window.

Serving reads the live promotions (``live_promotions``) through a short cache; operators manage them
with ``towerlight promotions`` (``set_promotion``, ``remove_promotion``, ``list_promotions``).

Example::

    >>> set_promotion(conn, Promotion("50", "pin", position=1))
    >>> set_promotion(conn, Promotion("181", "boost", boost=0.5, ends_at=datetime(2026, 12, 24, tzinfo=UTC)))
    >>> [p.item_id for p in live_promotions(conn)]
    ['50', '181']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from towerlight.errors import NotFoundError, ValidationError

_COLUMNS = "item_id, mode, position, boost, starts_at, ends_at, note"

DEFAULT_PIN_POSITION = 1  # when a pin names no position (CLI and admin API alike)
DEFAULT_BOOST = 0.25  # when a boost names no strength


@dataclass(frozen=True, slots=True)
class Promotion:
    """``mode`` is ``pin`` (with a 1-based ``position``) or ``boost`` (with ``boost`` in (0, 1])."""

    item_id: str
    mode: str
    position: int | None = None
    boost: float | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("pin", "boost"):
            raise ValidationError(f"promotion mode must be pin or boost, got {self.mode!r}")
        if self.mode == "pin" and (self.position is None or self.position < 1 or self.boost is not None):
            raise ValidationError("a pin needs a position >= 1 and no boost", {"item_id": self.item_id})
        if self.mode == "boost" and (self.boost is None or not 0 < self.boost <= 1 or self.position is not None):
            raise ValidationError("a boost needs 0 < boost <= 1 and no position", {"item_id": self.item_id})
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError("a promotion must end after it starts", {"item_id": self.item_id})


def set_promotion(conn: psycopg.Connection, promotion: Promotion) -> None:
    """Create or replace the promotion of ``promotion.item_id`` (the caller commits)."""
    p = promotion
    conn.execute(
        f"INSERT INTO promotions ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (item_id) DO UPDATE SET mode = excluded.mode, position = excluded.position,"
        " boost = excluded.boost, starts_at = excluded.starts_at, ends_at = excluded.ends_at,"
        " note = excluded.note, updated_at = now()",
        [p.item_id, p.mode, p.position, p.boost, p.starts_at, p.ends_at, p.note],
    )


def remove_promotion(conn: psycopg.Connection, item_id: str) -> None:
    """Delete the promotion of ``item_id``; ``NotFoundError`` when there is none."""
    if conn.execute("DELETE FROM promotions WHERE item_id = %s", [item_id]).rowcount == 0:
        raise NotFoundError(f"no promotion for item {item_id!r}", {"item_id": item_id})


def list_promotions(conn: psycopg.Connection) -> list[Promotion]:
    """Every promotion, live or not, pins first (by position), then boosts (strongest first)."""
    return _select(conn, "")


def live_promotions(conn: psycopg.Connection) -> list[Promotion]:
    """The promotions live now (inside their window), in the order of ``list_promotions``."""
    return _select(conn, " WHERE (starts_at IS NULL OR starts_at <= now()) AND (ends_at IS NULL OR ends_at > now())")


def _select(conn: psycopg.Connection, where: str) -> list[Promotion]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM promotions{where} ORDER BY mode DESC, position, boost DESC, item_id".encode()
    ).fetchall()
    return [Promotion(r[0], r[1], r[2], None if r[3] is None else float(r[3]), r[4], r[5], r[6]) for r in rows]
