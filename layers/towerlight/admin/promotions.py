"""What ``/admin/promotions`` does: list, pin or boost, and remove promoted items, naming the operator.

The same ``towerlight.db.promotions`` functions as ``towerlight promotions`` do the work; this module
adds the transaction, the log line with the caller's IAM ARN, and the JSON shape. Serving picks a
change up within its 30 s promotions cache.

Example::

    >>> save_promotion(conn, Promotion("50", "pin", position=1), actor="arn:aws:iam::123456789012:user/ops")
    {'promotion': {'item_id': '50', 'mode': 'pin', 'position': 1, ...}, 'actor': 'arn:aws:iam::...'}
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import psycopg

from towerlight.db.promotions import Promotion, list_promotions, live_promotions, remove_promotion, set_promotion

logger = logging.getLogger(__name__)


def promotions(conn: psycopg.Connection, *, live_only: bool = False) -> dict[str, Any]:
    """Every promotion (or only those inside their window now), pins first, as ``{"promotions": [...]}``."""
    with conn.transaction():
        rows = live_promotions(conn) if live_only else list_promotions(conn)
    return {"promotions": [dataclasses.asdict(p) for p in rows]}


def save_promotion(conn: psycopg.Connection, promotion: Promotion, *, actor: str | None = None) -> dict[str, Any]:
    """Create or replace the promotion of ``promotion.item_id``."""
    with conn.transaction():
        set_promotion(conn, promotion)
    p = promotion
    window = f"from {p.starts_at or 'now'} until {p.ends_at or 'removed'}"
    strength = f"position {p.position}" if p.mode == "pin" else f"boost {p.boost}"
    logger.warning("%s item %s, %s, %s (by %s)", p.mode, p.item_id, strength, window, actor or "unknown")
    return {"promotion": dataclasses.asdict(promotion), "actor": actor}


def delete_promotion(conn: psycopg.Connection, item_id: str, *, actor: str | None = None) -> dict[str, Any]:
    """Stop promoting ``item_id``; ``NotFoundError`` (HTTP 404) when it is not promoted."""
    with conn.transaction():
        remove_promotion(conn, item_id)
    logger.warning("item %s no longer promoted (by %s)", item_id, actor or "unknown")
    return {"removed": item_id, "actor": actor}
