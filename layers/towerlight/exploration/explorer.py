"""Recommend's exploration decision: VW picks the item of one slot among the top candidates from there down.

The page is ranked and shaped by the rules first. Then, for ``auto`` requests, ``ItemExplorer``:

1. takes the slot's options: the page's items from the slot down (pinned ones stay where they are),
   then the next ranked candidates not on the page (not with a per-category cap, which a new item could
   break), ``candidates`` of them at most;
2. asks the current VW model for the PMF over them (no model learned yet: ε-greedy around the ranked
   order, 1 - ε + ε/n for the first option and ε/n for each other, so serving starts as the ranker does);
3. samples one option from that PMF with a generator seeded by the recommendation id (the same id always
   gives the same choice for a given model), and moves it to the slot; the items it passes move down one
   place, and when it came from beyond the page, the page's last unpinned item makes room;
4. returns the ``Exploration`` to log: the features, the option chosen and its PMF probability, which is
   exactly the probability the item was shown with.

Example::

    >>> explorer = ItemExplorer(VWModelCache(lambda: store, epsilon=0.1), ExplorationSettings(epsilon=0.1))
    >>> page, exploration = explorer.explore(context, scorer, "two_tower", page, candidates, "9f1c...")
    >>> exploration.item_id, exploration.probability, exploration.greedy
    ('181', 0.91, True)
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from towerlight.bandit.state import user_segment
from towerlight.config import get_settings
from towerlight.exploration.features import action_features, user_features, vw_example
from towerlight.exploration.model import VWModel, VWModelCache
from towerlight.exploration.records import Exploration
from towerlight.exploration.settings import ExplorationSettings, exploration_settings
from towerlight.recommend.rules import Placement
from towerlight.recommend.strategies import Scorer, UserContext
from towerlight.store import open_store


class ModelSource(Protocol):
    def current(self) -> VWModel | None: ...


def ranked_pmf(n: int, epsilon: float) -> list[float]:
    """ε-greedy around the first of ``n`` options: what is served before any VW model exists.

    >>> ranked_pmf(4, 0.2)
    [0.85, 0.05, 0.05, 0.05]
    """
    share = epsilon / n
    return [1.0 - epsilon + share, *([share] * (n - 1))]


def sample_action(pmf: Sequence[float], u: float) -> int:
    """The option whose PMF interval holds ``u`` (0 ≤ u < 1), scaled to the PMF's total; never a zero one.

    >>> sample_action([0.7, 0.0, 0.3], 0.7)
    2
    """
    cumulative = list(itertools.accumulate(pmf))
    # bisect_right: cumulative[i - 1] <= u * total < cumulative[i], so option i has a positive probability
    return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(pmf) - 1)


def _pinned(placement: Placement) -> bool:
    return any(rule["rule"] == "pinned" for rule in placement.applied)


@dataclass
class ItemExplorer:
    """Picks one slot's item with the VW model of ``models`` (see the module's docstring)."""

    models: ModelSource
    settings: ExplorationSettings

    def pool_size(self, k: int) -> int:
        """How many ranked candidates a page of ``k`` needs so the slot has its options."""
        return max(k, self.settings.slot - 1 + self.settings.candidates)

    def explore(
        self,
        context: UserContext,
        scorer: Scorer,
        strategy: str,
        page: list[Placement],
        ranked: np.ndarray,
        recommendation_id: str,
        *,
        reorder_only: bool = False,
    ) -> tuple[list[Placement], Exploration | None]:
        """The page with the slot's item chosen, and the decision; ``(page, None)`` when there is no choice
        (a short page, a pinned slot, fewer than two options). ``ranked`` are the strategy's candidates,
        best first; with ``reorder_only`` only the page's own items are options."""
        start = self.settings.slot - 1
        if start >= len(page) or _pinned(page[start]):
            return page, None
        positions = [i for i in range(start, len(page)) if not _pinned(page[i])]
        options = [page[i] for i in positions]
        if not reorder_only:
            shown = {p.row for p in page}
            options += [Placement(row) for row in ranked.tolist() if row not in shown]
        options = options[: self.settings.candidates]
        if len(options) < 2:
            return page, None

        rows = np.fromiter((o.row for o in options), dtype=np.int64, count=len(options))
        bundle = context.bundle
        shared = user_features(
            bundle.catalogue,
            context.history,
            segment=user_segment(len(context.history)),
            demographic=context.segment,
            strategy=strategy,
        )
        actions = action_features(bundle.catalogue, bundle.popularity, rows, scorer.scores(rows))
        model = self.models.current()
        pmf = model.pmf(vw_example(shared, actions)) if model else ranked_pmf(len(options), self.settings.epsilon)
        index = sample_action(pmf, random.Random(recommendation_id).random())
        probability = pmf[index] / sum(pmf)

        chosen = options[index]
        moved = Placement(chosen.row, [*chosen.applied, {"rule": "explored", "probability": round(probability, 6)}])
        rest = [o for o in options[: len(positions)] if o is not chosen]
        arranged = list(page)
        for position, placement in zip(positions, [moved, *rest], strict=False):
            arranged[position] = placement
        exploration = Exploration(
            slot=start + 1,
            item_id=str(bundle.catalogue.item_ids[chosen.row]),
            chosen=index,
            probability=min(1.0, probability),
            greedy=index == int(np.argmax(pmf)),
            shared=shared,
            actions=tuple(actions),
            model_version=model.version if model else None,
        )
        return arranged, exploration


def item_explorer() -> ItemExplorer | None:
    """Recommend's explorer when ``TOWERLIGHT_EXPLORATION_EPSILON`` is set (models from ``TOWERLIGHT_STORE``)."""
    settings = exploration_settings()
    if settings is None:
        return None
    uri = get_settings().store_uri
    store = open_store(uri) if uri else None
    models = VWModelCache(
        (lambda: store) if store is not None else None,
        epsilon=settings.epsilon,
        ttl=get_settings().model_refresh_seconds,
    )
    return ItemExplorer(models, settings)
