"""``towerlight promotions list|pin|boost|remove``: manage promoted items (the ``promotions`` table).

Serving picks a change up within 30 seconds; at most ``TOWERLIGHT_MAX_PROMOTED`` (default 2) promoted
items appear on one page, and never one the request's filters exclude.

Example::

    towerlight promotions pin 50 --position 1 --until 2026-12-24T00:00:00Z --note "holiday banner"
    towerlight promotions boost 181 --boost 0.3
    towerlight promotions list
    towerlight promotions remove 50
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime

import psycopg

from towerlight.db.connection import connect
from towerlight.db.promotions import (
    DEFAULT_BOOST,
    DEFAULT_PIN_POSITION,
    Promotion,
    list_promotions,
    remove_promotion,
    set_promotion,
)
from towerlight_offline import console
from towerlight_offline.local.postgres import ensure_database_url


def _window(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("item_id")
    sub.add_argument("--from", dest="starts_at", type=datetime.fromisoformat, help="ISO-8601 start (default: now)")
    sub.add_argument("--until", dest="ends_at", type=datetime.fromisoformat, help="ISO-8601 end (default: none)")
    sub.add_argument("--note", help="why, for the next operator")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("promotions", help="pin or boost chosen items on every page")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every promotion, live or not").set_defaults(func=_list)
    pin = actions.add_parser("pin", help="show ITEM at a fixed position of every page")
    _window(pin)
    pin.add_argument(
        "--position", type=int, default=DEFAULT_PIN_POSITION, help=f"1-based position (default {DEFAULT_PIN_POSITION})"
    )
    pin.set_defaults(func=_set, mode="pin")
    boost = actions.add_parser("boost", help="move ITEM up the page by a share of the candidate list")
    _window(boost)
    boost.add_argument(
        "--boost", type=float, default=DEFAULT_BOOST, help=f"0 < boost <= 1 (1 puts it first; default {DEFAULT_BOOST})"
    )
    boost.set_defaults(func=_set, mode="boost")
    remove = actions.add_parser("remove", help="stop promoting ITEM")
    remove.add_argument("item_id")
    remove.set_defaults(func=_remove)


def _set(args: argparse.Namespace) -> int:
    promotion = Promotion(
        args.item_id,
        args.mode,
        position=args.position if args.mode == "pin" else None,
        boost=args.boost if args.mode == "boost" else None,
        starts_at=args.starts_at,
        ends_at=args.ends_at,
        note=args.note,
    )
    return _write(lambda conn: set_promotion(conn, promotion), f"{args.mode} {args.item_id}: saved")


def _remove(args: argparse.Namespace) -> int:
    return _write(lambda conn: remove_promotion(conn, args.item_id), f"{args.item_id}: no longer promoted")


def _write(change: Callable[[psycopg.Connection], None], done: str) -> int:
    ensure_database_url()
    with connect() as conn:
        change(conn)
        conn.commit()
    console.say(done)
    return 0


def _list(args: argparse.Namespace) -> int:
    ensure_database_url()
    with connect() as conn:
        promotions = list_promotions(conn)
    if not promotions:
        console.say("no promotions")
        return 0
    rows = [
        [p.item_id, p.mode, p.position or "", p.boost or "", p.starts_at or "", p.ends_at or "", p.note or ""]
        for p in promotions
    ]
    console.say(console.table(["item_id", "mode", "position", "boost", "from", "until", "note"], rows))
    return 0
