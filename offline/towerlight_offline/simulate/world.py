"""The simulated world: users whose true click probabilities are known, on the synthetic catalogue.

The catalogue, the users and their past events come from ``synthetic_data``, which also returns what
generated them: each user's favourite categories and each item's popularity. The click model is a
logistic one on that truth, plus a hidden quality per item that no training event reflects (so online
learning has something the trained model cannot know)::

    logit p(u, i) = base + favourite · [category(i) ∈ favourites(u)] + popularity · z(log popularity(i)) + quality(i)

An item shown at rank r is examined with probability ``1 / log2(r + 1)`` (position bias) and clicked,
once examined, with p(u, i), independently of the other items. A request is rewarded when at least one
item is clicked, with the click's reward weight (``EVENT_TYPES``): what an impression earns in Postgres.
So the expected reward of any list is known exactly (``list_value``), and so is the best possible list
(``oracle_value``: the k items of highest p, best first).

Example::

    >>> world = SimulatedWorld.generate(WorldConfig(users=2000, items=1000))
    >>> world.list_value("u7", ["i3", "i90"])
    0.0712
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from towerlight.event_types import EVENT_TYPES
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.data.synthetic import synthetic_data

CLICK = "click"
CLICK_REWARD = EVENT_TYPES[CLICK].reward


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of the synthetic data and the click model's coefficients (logits)."""

    users: int = 2000
    items: int = 1000
    events: int = 40_000
    categories: int = 20
    cold_users: int = 200  # users held out of training and of Postgres: the service has never seen them
    base: float = -4.0
    favourite: float = 2.0
    popularity: float = 0.5
    quality: float = 1.0  # standard deviation of the hidden per-item quality
    position_bias: bool = True
    seed: int = 0


@dataclass
class SimulatedWorld:
    """The training data, the users to simulate and the true click probability of every (user, item)."""

    config: WorldConfig
    dataset: Dataset  # what the model is trained on (the cold users' events left out)
    item_ids: np.ndarray  # item id of each catalogue row of the truth
    warm_users: tuple[str, ...]  # users with events in the training data
    cold_users: tuple[str, ...]
    _favourite: np.ndarray  # (n_users, n_categories) bool
    _item_category: np.ndarray  # (n_items,) primary category
    _item_logit: np.ndarray  # (n_items,) base + popularity + hidden quality
    _user_row: dict[str, int]
    _item_row: dict[str, int]

    @classmethod
    def generate(cls, config: WorldConfig) -> SimulatedWorld:
        """Synthetic data of ``config``'s size, its truth, and a hidden quality per item (same seed)."""
        data, truth = synthetic_data(config.users, config.items, config.events, config.categories, seed=config.seed)
        rng = np.random.default_rng(config.seed + 1)
        favourite = np.zeros((config.users, config.categories), dtype=bool)
        for slot in range(3):
            counted = truth.n_favourites > slot
            favourite[np.flatnonzero(counted), truth.favourites[counted, slot]] = True
        log_popularity = np.log(truth.popularity)
        z = (log_popularity - log_popularity.mean()) / log_popularity.std()
        quality = rng.normal(0.0, config.quality, config.items)
        user_ids = data.users["user_id"].astype(str).to_numpy()
        cold = set(rng.choice(user_ids, size=min(config.cold_users, config.users - 1), replace=False).tolist())
        interactions = data.interactions[~data.interactions["user_id"].isin(cold)]
        active = set(interactions["user_id"].unique().tolist())
        dataset = Dataset(data.name, interactions.reset_index(drop=True), data.items, data.users)
        item_ids = data.items["item_id"].astype(str).to_numpy()
        return cls(
            config=config,
            dataset=dataset,
            item_ids=item_ids,
            warm_users=tuple(u for u in user_ids if u in active),
            cold_users=tuple(sorted(cold)),
            _favourite=favourite,
            _item_category=truth.primary,
            _item_logit=config.base + config.popularity * z + quality,
            _user_row={u: n for n, u in enumerate(user_ids)},
            _item_row={i: n for n, i in enumerate(item_ids)},
        )

    def click_probabilities(self, user_id: str, item_ids: Sequence[str] | None = None) -> np.ndarray:
        """p(click | examined) of ``user_id`` for ``item_ids`` (every catalogue row when None)."""
        rows = slice(None) if item_ids is None else np.fromiter((self._item_row[i] for i in item_ids), dtype=np.int64)
        likes = self._favourite[self._user_row[user_id], self._item_category[rows]]
        return 1.0 / (1.0 + np.exp(-(self._item_logit[rows] + self.config.favourite * likes)))

    def examination(self, n: int) -> np.ndarray:
        """The probability that each of the first ``n`` ranks is looked at."""
        if not self.config.position_bias:
            return np.ones(n)
        return 1.0 / np.log2(np.arange(2, n + 2))

    def list_value(self, user_id: str, item_ids: Sequence[str]) -> float:
        """The expected reward of showing ``item_ids`` (in that order) to ``user_id``."""
        if not item_ids:
            return 0.0
        p = self.examination(len(item_ids)) * self.click_probabilities(user_id, item_ids)
        return CLICK_REWARD * float(1.0 - np.prod(1.0 - p))

    def oracle_value(self, user_id: str, excluded: Collection[str], k: int) -> float:
        """The expected reward of the best list: the ``k`` items of highest p not in ``excluded``, best first."""
        p = self.click_probabilities(user_id)
        if excluded:
            p[[self._item_row[i] for i in excluded if i in self._item_row]] = -1.0
        top = np.sort(p[np.argpartition(-p, k - 1)[:k]])[::-1]
        return CLICK_REWARD * float(1.0 - np.prod(1.0 - self.examination(k) * np.maximum(top, 0.0)))

    def clicks(self, user_id: str, item_ids: Sequence[str], rng: np.random.Generator) -> list[int]:
        """The ranks (0-based) the user clicks on this list: each one examined and liked, independently."""
        p = self.examination(len(item_ids)) * self.click_probabilities(user_id, item_ids)
        return np.flatnonzero(rng.random(len(item_ids)) < p).tolist()
