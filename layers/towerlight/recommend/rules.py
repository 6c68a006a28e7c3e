"""Business rules that shape a page: promotions (pins and boosts, capped per page), per-category caps, and
strict backfill, all after the request's ``Exclusions`` (a promoted or back-filled item is never a seen,
blocked, inactive or filtered-out one).

``assemble_page`` walks the strategy's candidates best first (boosted items moved up), then, for a strict
request, the back-fill sources; it skips a row whose categories already fill ``max_per_category`` and
puts pinned items at their positions. Each placed row records the rules applied to it, for ``explain``:
``promoted`` (boosted), ``pinned``, ``capped`` (it took the place of ``skipped`` higher-scored items of a
full category) and ``backfilled``.

Example::

    >>> page = assemble_page(np.array([4, 1, 6]), PageRules(k=2, max_per_category=1), catalogue, no_rules)
    >>> [(p.row, p.applied) for p in page]
    [(4, []), (6, [{'rule': 'capped', 'skipped': 1}])]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from towerlight.db.promotions import Promotion
from towerlight.errors import ValidationError
from towerlight.model.bundle import Catalogue
from towerlight.recommend.filters import MAX_CHUNK_ROWS, Exclusions

DEFAULT_MAX_PROMOTED = 2  # promoted (pinned or boosted) items on one page at most


class NotEnoughItemsError(ValidationError):
    """``strict=true`` asked for more items than the catalogue can offer after the filters (HTTP 422)."""

    code = "not_enough_items"


@dataclass(frozen=True, slots=True)
class PageRules:
    """The page a request asks for: ``k`` items, at most ``max_per_category`` of any category (None: no
    cap), at most ``max_promoted`` promoted items, exactly ``k`` when ``strict``."""

    k: int
    max_per_category: int | None = None
    max_promoted: int = DEFAULT_MAX_PROMOTED
    strict: bool = False


@dataclass(slots=True)
class Placement:
    row: int
    applied: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LivePromotions:
    """The promotions a page may use: allowed by the request's rules, at most ``max_promoted``, pins first."""

    pins: Mapping[int, int]  # 1-based position -> row
    boosts: Mapping[int, float]  # row -> boost

    @classmethod
    def select(
        cls, promotions: Sequence[Promotion], catalogue: Catalogue, rules: Exclusions, page: PageRules
    ) -> LivePromotions:
        """Pins (by position, one per position, within the page) then boosts (strongest first)."""
        known = [(p, row) for p in promotions if (row := catalogue.row_of(p.item_id)) is not None]
        rows = np.fromiter((row for _, row in known), dtype=np.int64, count=len(known))
        allowed = rules.allowed(rows) if len(rows) else np.zeros(0, dtype=bool)
        pins: dict[int, int] = {}
        boosts: dict[int, float] = {}
        pinned = sorted(
            (p.position or 0, row) for (p, row), ok in zip(known, allowed, strict=True) if ok and p.mode == "pin"
        )
        boosted = sorted(
            ((p.boost or 0.0, row) for (p, row), ok in zip(known, allowed, strict=True) if ok and p.mode == "boost"),
            reverse=True,
        )
        budget = page.max_promoted
        for position, row in pinned:
            if budget and position <= page.k and position not in pins and row not in pins.values():
                pins[position] = row
                budget -= 1
        for boost, row in boosted:
            if budget and row not in pins.values():
                boosts[row] = boost
                budget -= 1
        return cls(pins, boosts)


def apply_boosts(ranked: np.ndarray, boosts: Mapping[int, float]) -> np.ndarray:
    """``ranked`` re-ordered by rank score ``1 - i / n`` (0 for a row it lacks) plus each row's boost.

    A boost of 1 puts an item first; 0.25 lifts it by a quarter of the candidate list (the service passes
    the top-C candidates when a boost is live), and an item retrieval did not find starts from 0.

    >>> apply_boosts(np.array([7, 8, 9, 10]), {10: 0.5, 3: 0.1}).tolist()
    [7, 10, 8, 9, 3]
    """
    if not boosts:
        return ranked
    n = max(len(ranked), 1)
    keys = {int(row): 1.0 - i / n for i, row in enumerate(ranked.tolist())}
    for row, boost in boosts.items():
        keys[row] = keys.get(row, 0.0) + boost
    order = sorted(keys, key=lambda row: (-keys[row], row not in boosts))  # ties: boosted first, then ranked order
    return np.asarray(order, dtype=np.int64)


def _allowed_rows(sources: Iterable[np.ndarray], rules: Exclusions) -> Iterator[int]:
    for source in sources:
        for start in range(0, len(source), MAX_CHUNK_ROWS):
            block = source[start : start + MAX_CHUNK_ROWS]
            yield from block[rules.allowed(block)].tolist()


def assemble_page(
    ranked: np.ndarray,
    page: PageRules,
    catalogue: Catalogue,
    rules: Exclusions,
    *,
    promotions: LivePromotions | None = None,
    backfill: Iterable[np.ndarray] = (),
) -> list[Placement]:
    """The page: ``ranked`` (allowed rows, best first) shaped by promotions and caps, back-filled if strict.

    Raises ``NotEnoughItemsError`` (422) when a strict page cannot reach ``page.k`` items.
    """
    promotions = promotions or LivePromotions({}, {})
    pins = dict(promotions.pins)
    index = catalogue.categories
    cap = page.max_per_category
    counts: Counter[int] = Counter()
    if cap is not None:
        for row in pins.values():  # pinned items are on the page whatever the cap, and count towards it
            counts.update(index.codes_of_row(row).tolist())
    used = set(pins.values())
    placed: list[Placement] = []

    def place_pins() -> None:
        while len(placed) + 1 in pins:
            position = len(placed) + 1
            placed.append(Placement(pins.pop(position), [{"rule": "pinned", "position": position}]))

    ranked_rows = ((row, False) for row in apply_boosts(ranked, promotions.boosts).tolist())
    backfill_rows = ((row, True) for row in _allowed_rows(backfill if page.strict else (), rules))
    skipped = 0
    for row, backfilled in chain(ranked_rows, backfill_rows):
        place_pins()
        if len(placed) >= page.k:
            break
        if row in used:
            continue
        codes = index.codes_of_row(row).tolist() if cap is not None else []
        if cap is not None and any(counts[c] >= cap for c in codes):
            skipped += 1
            continue
        applied: list[dict[str, Any]] = []
        if row in promotions.boosts:
            applied.append({"rule": "promoted", "boost": promotions.boosts[row]})
        if backfilled:
            applied.append({"rule": "backfilled"})
        if skipped:
            applied.append({"rule": "capped", "skipped": skipped})
            skipped = 0
        placed.append(Placement(row, applied))
        used.add(row)
        counts.update(codes)
    place_pins()
    for position in sorted(pins):  # pins beyond a short page close it, in order
        if len(placed) < page.k:
            placed.append(Placement(pins[position], [{"rule": "pinned", "position": len(placed) + 1}]))
    if page.strict and len(placed) < page.k:
        raise NotEnoughItemsError(
            f"strict=true asked for exactly {page.k} items, but only {len(placed)} can be recommended to this "
            "user with these filters",
            {"requested": page.k, "available": len(placed)},
        )
    return placed
