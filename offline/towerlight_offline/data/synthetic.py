"""Synthetic interaction data with learnable structure, at any size (1M items / 5M events in seconds).

The generative story, all vectorised with numpy:

- items have 1-3 categories and a Zipf-like popularity (weight ``rank ** -popularity_exponent``); titles
  are the primary category's word, a word typical of that category, and a random word;
- users like 1-3 categories; most of their events pick one of them, then an item of that category by
  popularity, the rest pick any item by popularity (exploration);
- a user's events are spread over the ~180 days after they join, with strictly increasing times;
- events are mostly views and clicks; purchases are likelier inside the user's favourite categories;
- user attributes (``age``, ``region``) and item attributes (``brand``, ``price``) come along, and
  ``region`` is correlated with the user's favourite category (a cold-start signal).

Example::

    >>> data = synthetic_dataset(n_users=1_000, n_items=5_000, n_events=50_000, seed=7)
    >>> data.summary()
    'synthetic: 50,000 interactions, 1,000 users, 5,000 items'
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from towerlight_offline.data.dataset import Dataset

logger = logging.getLogger(__name__)

CATEGORY_WORDS = (
    "action", "adventure", "art", "audio", "baby", "beauty", "books", "camping", "cars", "classic",
    "comedy", "cooking", "crafts", "cycling", "drama", "electronics", "fashion", "fitness", "games",
    "garden", "health", "history", "home", "jazz", "jewelry", "kids", "kitchen", "lighting", "music",
    "mystery", "office", "outdoor", "pets", "photo", "poetry", "puzzles", "romance", "running", "science",
    "shoes", "skincare", "soccer", "space", "sports", "tea", "tools", "toys", "travel", "vintage", "yoga",
)  # fmt: skip
REGIONS = ("north", "south", "east", "west", "central", "coast", "islands", "highlands")
START_TIMESTAMP = 1_704_067_200  # 2024-01-01T00:00:00Z: fixed, so a seed gives the same data every day
HORIZON_SECONDS = 180 * 86_400
EXPLORATION_RATE = 0.2
CATEGORY_TOKENS = 16  # words typical of each category, used in its items' titles
# (view, click, purchase) probabilities for events inside a favourite category and for exploration
EVENT_MIX = {"favourite": (0.62, 0.3, 0.08), "exploration": (0.83, 0.15, 0.02)}


def category_names(n_categories: int) -> list[str]:
    """``n_categories`` distinct category names: the words of ``CATEGORY_WORDS``, then numbered ones.

    Example::

        >>> category_names(52)[-2:]
        ['action2', 'adventure2']
    """
    words = len(CATEGORY_WORDS)
    return [CATEGORY_WORDS[j % words] + (str(j // words + 1) if j >= words else "") for j in range(n_categories)]


def _vocabulary() -> np.ndarray:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = np.array([c + v for c in consonants for v in vowels])
    return np.strings.add(np.repeat(syllables, len(syllables)), np.tile(syllables, len(syllables)))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of small lists/dicts (none of them cyclic)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.strings.add(prefix, np.arange(n).astype(str)).astype(object)


def _text_column(vocabulary: np.ndarray | list[str], codes: np.ndarray) -> pd.Series:
    """A ``str`` column of ``vocabulary[codes]``, gathered by Arrow (much faster than Python objects)."""
    return pd.Series(pa.array(vocabulary, type=pa.string()).take(pa.array(codes)), dtype="str")


def _distinct_categories(rng: np.random.Generator, primary: np.ndarray, n_categories: int) -> np.ndarray:
    """Per item, three different categories starting with ``primary`` (fewer exist when n < 3)."""
    n = primary.size
    first = 1 + rng.integers(0, max(n_categories - 1, 1), n)
    second = 1 + rng.integers(0, max(n_categories - 2, 1), n)
    second += second >= first  # skip the offset already taken
    return np.stack([primary, (primary + first) % n_categories, (primary + second) % n_categories], axis=1)


def _sample_counts(rng: np.random.Generator, n_users: int, n_events: int) -> np.ndarray:
    """Events per user: heavy-tailed activity, and at least one event each when there are enough."""
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    activity /= activity.sum()
    floor = 1 if n_events >= n_users else 0
    return floor + rng.multinomial(n_events - floor * n_users, activity)


def _increasing_times(
    rng: np.random.Generator, users: np.ndarray, counts: np.ndarray, joined: np.ndarray
) -> np.ndarray:
    """Per event, a time within its user's window (join .. horizon), strictly increasing per user."""
    window = HORIZON_SECONDS - joined[users]
    offsets = joined[users] + (rng.random(users.size) * window).astype(np.int64)
    # users are already grouped (np.repeat), so sorting user-major keys sorts times within each user
    shift = np.int64(1 << 25)  # > HORIZON_SECONDS
    offsets = np.sort(users.astype(np.int64) * shift + offsets) - users.astype(np.int64) * shift
    # strictly increasing: offset - position is made non-decreasing by a running max within each user
    position = np.arange(users.size) - np.repeat(np.cumsum(counts) - counts, counts)
    lifted = offsets - position + users.size  # >= 0
    span = np.int64(lifted.max(initial=0) + 1)
    flat = np.maximum.accumulate(users.astype(np.int64) * span + lifted) - users.astype(np.int64) * span
    return START_TIMESTAMP + flat - users.size + position


@dataclass(frozen=True)
class _PopularitySampler:
    """Draws items by popularity, from one category or from all: items grouped by primary category."""

    by_category: np.ndarray  # item indices, grouped by primary category
    cumulative: np.ndarray  # running popularity over ``by_category``
    before: np.ndarray  # per category, the running popularity before its first item
    mass: np.ndarray  # per category, its total popularity (0 when it has no items)

    @classmethod
    def build(cls, primary: np.ndarray, popularity: np.ndarray, n_categories: int) -> _PopularitySampler:
        by_category = np.argsort(primary, kind="stable")
        cumulative = np.cumsum(popularity[by_category])
        grouped = primary[by_category]
        starts = np.searchsorted(grouped, np.arange(n_categories), side="left")
        ends = np.searchsorted(grouped, np.arange(n_categories), side="right")
        before = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0.0)
        mass = np.where(ends > starts, cumulative[np.maximum(ends - 1, 0)] - before, 0.0)
        return cls(by_category, cumulative, before, mass)

    def sample(self, rng: np.random.Generator, category: np.ndarray, anywhere: np.ndarray) -> np.ndarray:
        low = np.where(anywhere, 0.0, self.before[category])
        width = np.where(anywhere, self.cumulative[-1], self.mass[category])
        slot = np.searchsorted(self.cumulative, low + rng.random(category.size) * width, side="right")
        return self.by_category[np.minimum(slot, self.by_category.size - 1)]


def _items(
    rng: np.random.Generator, n_items: int, n_categories: int, popularity_exponent: float
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Items frame, primary category and popularity weight of each item."""
    names = np.array(category_names(n_categories), dtype=object)
    category_mass = np.arange(1, n_categories + 1, dtype=float) ** -0.6
    primary = rng.choice(n_categories, size=n_items, p=category_mass / category_mass.sum())
    n_cats = np.minimum(rng.choice(3, size=n_items, p=(0.5, 0.35, 0.15)) + 1, n_categories)
    chosen = _distinct_categories(rng, primary, n_categories)
    popularity = (rng.permutation(n_items) + 1.0) ** -popularity_exponent

    vocabulary = _vocabulary()
    signature = (primary * 7919 + rng.integers(0, CATEGORY_TOKENS, size=n_items)) % vocabulary.size
    capitalized = np.array([name.capitalize() for name in names.tolist()], dtype=object)
    titles = np.strings.add(
        np.strings.add(capitalized[primary].astype(str), " "),
        np.strings.add(
            np.strings.add(vocabulary[signature], " "), vocabulary[rng.integers(0, vocabulary.size, n_items)]
        ),
    )
    first, second, third = (names[chosen[:, j]].tolist() for j in range(3))
    brands = _ids("brand", max(1, n_items // 200))[rng.integers(0, max(1, n_items // 200), n_items)]
    prices = np.round(np.exp(rng.normal(3.0 + 0.02 * primary, 0.8)), 2)
    with _gc_paused():
        categories = [
            [a] if k == 1 else [a, b] if k == 2 else [a, b, c]
            for a, b, c, k in zip(first, second, third, n_cats.tolist(), strict=True)
        ]
        attributes = [{"brand": b, "price": p} for b, p in zip(brands.tolist(), prices.tolist(), strict=True)]
    frame = pd.DataFrame(
        {
            "item_id": pd.Series(_ids("i", n_items), dtype="str"),
            "title": pd.Series(titles, dtype="str"),
            "categories": pd.Series(categories, dtype=object),
            "attributes": pd.Series(attributes, dtype=object),
            "active": np.ones(n_items, dtype=bool),
        }
    )
    return frame, primary, popularity


def _users(
    rng: np.random.Generator, n_users: int, sampler: _PopularitySampler
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Users frame, favourite categories (n_users x 3), how many of them count (1-3), join offsets."""
    filled = np.flatnonzero(sampler.mass > 0)  # bigger categories are liked by more users
    favourites = rng.choice(filled, size=(n_users, 3), p=sampler.mass[filled] / sampler.mass[filled].sum())
    n_favourites = rng.choice(3, size=n_users, p=(0.4, 0.4, 0.2)) + 1
    correlated = rng.random(n_users) < 0.7
    region = np.where(correlated, favourites[:, 0] % len(REGIONS), rng.integers(0, len(REGIONS), n_users))
    ages = rng.integers(18, 71, size=n_users).tolist()
    regions = np.array(REGIONS, dtype=object)[region].tolist()
    with _gc_paused():
        attributes = [{"age": a, "region": r} for a, r in zip(ages, regions, strict=True)]
    joined = (rng.random(n_users) * 0.8 * HORIZON_SECONDS).astype(np.int64)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(_ids("u", n_users), dtype="str"),
            "attributes": pd.Series(attributes, dtype=object),
        }
    )
    return frame, favourites, n_favourites, joined


def _event_kinds(rng: np.random.Generator, explore: np.ndarray) -> np.ndarray:
    """0 view, 1 click, 2 purchase, with the mix of the event's branch (favourite or exploration)."""
    view, click, _ = EVENT_MIX["favourite"]
    view_x, click_x, _ = EVENT_MIX["exploration"]
    view_cut = np.where(explore, view_x, view)
    click_cut = view_cut + np.where(explore, click_x, click)
    draw = rng.random(explore.size)
    return (draw >= view_cut).astype(np.int8) + (draw >= click_cut).astype(np.int8)


@dataclass(frozen=True)
class SyntheticTruth:
    """The latent state the data was generated from, indexed like the dataset's users and items frames."""

    favourites: np.ndarray  # (n_users, 3) category indices; the first ``n_favourites`` of each row count
    n_favourites: np.ndarray  # (n_users,) 1-3
    primary: np.ndarray  # (n_items,) primary category index
    popularity: np.ndarray  # (n_items,) the sampling weight, rank ** -popularity_exponent


def synthetic_dataset(
    n_users: int,
    n_items: int,
    n_events: int,
    n_categories: int = 50,
    seed: int = 0,
    *,
    popularity_exponent: float = 0.9,
) -> Dataset:
    """A ``Dataset`` of ``n_events`` interactions by ``n_users`` users on ``n_items`` items.

    Deterministic for a given ``seed``. Item popularity follows a power law (rank-frequency slope about
    ``-popularity_exponent``); users prefer a few categories, so there is structure to learn. All items
    are active and events carry no value.

    Example::

        >>> synthetic_dataset(100, 500, 2_000, n_categories=10).interactions["event_type"].unique().tolist()
        ['view', 'click', 'purchase']
    """
    return synthetic_data(n_users, n_items, n_events, n_categories, seed, popularity_exponent=popularity_exponent)[0]


def synthetic_data(
    n_users: int,
    n_items: int,
    n_events: int,
    n_categories: int = 50,
    seed: int = 0,
    *,
    popularity_exponent: float = 0.9,
) -> tuple[Dataset, SyntheticTruth]:
    """``synthetic_dataset`` and the truth behind it: each user's favourite categories, each item's category
    and popularity (what a simulator needs to know users' true preferences).

    Example::

        >>> data, truth = synthetic_data(100, 500, 2_000, n_categories=10)
        >>> truth.favourites.shape, truth.primary.shape
        ((100, 3), (500,))
    """
    if min(n_users, n_items, n_categories) < 1 or n_events < 0:
        raise ValueError("n_users, n_items and n_categories must be >= 1, n_events >= 0")
    rng = np.random.default_rng(seed)
    items, primary, popularity = _items(rng, n_items, n_categories, popularity_exponent)
    sampler = _PopularitySampler.build(primary, popularity, n_categories)
    users, favourites, n_favourites, joined = _users(rng, n_users, sampler)

    counts = _sample_counts(rng, n_users, n_events)
    user_of = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    explore = rng.random(n_events) < EXPLORATION_RATE
    favourite = favourites[user_of, (rng.random(n_events) * n_favourites[user_of]).astype(np.int64)]
    item_of = sampler.sample(rng, favourite, explore)
    del favourite  # free large temporaries early: the peak stays near the final dataset size
    interactions = pd.DataFrame(
        {
            "user_id": _text_column(users["user_id"].to_numpy(dtype=object), user_of),
            "item_id": _text_column(items["item_id"].to_numpy(dtype=object), item_of),
            "timestamp": _increasing_times(rng, user_of, counts, joined),
            "event_type": _text_column(["view", "click", "purchase"], _event_kinds(rng, explore)),
            "value": np.full(n_events, np.nan),
        }
    )
    dataset = Dataset("synthetic", interactions, items, users)
    logger.info("generated %s", dataset.summary())
    return dataset, SyntheticTruth(favourites, n_favourites, primary, popularity)
