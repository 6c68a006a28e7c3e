"""The synthetic generator: contract shapes, power-law popularity, learnable structure, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towerlight.event_types import EVENT_TYPES
from towerlight_offline.data.dataset import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, Dataset
from towerlight_offline.data.synthetic import HORIZON_SECONDS, START_TIMESTAMP, synthetic_dataset


@pytest.fixture(scope="module")
def data() -> Dataset:
    return synthetic_dataset(n_users=2_000, n_items=20_000, n_events=200_000, n_categories=30, seed=3)


def test_shapes_and_types_follow_the_contract(data: Dataset) -> None:
    # GIVEN / WHEN a generated dataset
    # THEN the frames have the requested sizes, the contract's columns and types
    assert (len(data.interactions), len(data.items), len(data.users)) == (200_000, 20_000, 2_000)
    assert tuple(data.interactions.columns) == INTERACTION_COLUMNS
    assert tuple(data.items.columns) == ITEM_COLUMNS
    assert tuple(data.users.columns) == USER_COLUMNS
    assert data.interactions["timestamp"].dtype == "int64"
    assert data.interactions["value"].isna().all()
    assert set(data.interactions["event_type"]) == {"view", "click", "purchase"} <= set(EVENT_TYPES)
    assert data.items["item_id"].is_unique and data.users["user_id"].is_unique
    assert set(data.interactions["item_id"]) <= set(data.items["item_id"])
    assert data.interactions["user_id"].nunique() == 2_000  # every user has at least one event
    item = data.items.iloc[0]
    assert 1 <= len(item["categories"]) <= 3 and len(set(item["categories"])) == len(item["categories"])
    assert item["title"].split()[0].lower() == item["categories"][0]
    assert set(item["attributes"]) == {"brand", "price"} and bool(item["active"]) is True
    assert set(data.users.iloc[0]["attributes"]) == {"age", "region"}


def test_event_mix_is_mostly_views_and_clicks(data: Dataset) -> None:
    shares = data.interactions["event_type"].value_counts(normalize=True)
    assert shares["view"] > 0.55
    assert shares["view"] + shares["click"] > 0.9
    assert 0.02 < shares["purchase"] < 0.1


def test_popularity_is_power_law_skewed(data: Dataset) -> None:
    # GIVEN the number of events per item, most popular first
    counts = data.interactions["item_id"].value_counts().to_numpy()
    # THEN the top 1% of items take a large share, far above uniform
    top = counts[: len(data.items) // 100].sum() / counts.sum()
    assert top > 0.25
    # AND the rank-frequency curve is a straight, falling line in log-log over the head
    ranks = np.arange(1, 1_001)
    slope = np.polyfit(np.log(ranks), np.log(counts[:1_000]), 1)[0]
    assert -1.3 < slope < -0.5


def test_users_have_learnable_category_preferences(data: Dataset) -> None:
    # GIVEN each event's primary item category
    primary = data.items.set_index("item_id")["categories"].str[0]
    events = data.interactions.assign(category=data.interactions["item_id"].map(primary))
    active = events.groupby("user_id").filter(lambda g: len(g) >= 30)
    # WHEN measuring each active user's share of events in their most frequent category
    top_share = active.groupby("user_id")["category"].agg(lambda c: c.value_counts(normalize=True).iloc[0])
    overall_top = events["category"].value_counts(normalize=True).iloc[0]
    # THEN users concentrate on their favourites well beyond the global category mix
    assert top_share.median() > overall_top + 0.15


def test_timestamps_increase_per_user_within_the_horizon(data: Dataset) -> None:
    ts = data.interactions["timestamp"]
    gaps = data.interactions.groupby("user_id", sort=False)["timestamp"].diff().dropna()
    assert (gaps > 0).all()
    assert ts.min() >= START_TIMESTAMP
    assert ts.max() <= START_TIMESTAMP + HORIZON_SECONDS + 86_400


def test_same_seed_same_data_other_seed_other_data() -> None:
    # GIVEN two runs with the same seed and one with another
    a = synthetic_dataset(300, 1_000, 5_000, seed=11)
    b = synthetic_dataset(300, 1_000, 5_000, seed=11)
    c = synthetic_dataset(300, 1_000, 5_000, seed=12)
    # THEN the first two are identical and the third differs
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert not a.interactions.equals(c.interactions)


@pytest.mark.parametrize(
    ("n_users", "n_items", "n_events", "n_categories"), [(5, 3, 2, 1), (1, 1, 0, 2), (50, 10, 40, 2)]
)
def test_tiny_and_degenerate_sizes(n_users: int, n_items: int, n_events: int, n_categories: int) -> None:
    data = synthetic_dataset(n_users, n_items, n_events, n_categories=n_categories)
    assert (len(data.interactions), len(data.items), len(data.users)) == (n_events, n_items, n_users)
    assert all(len(set(c)) == len(c) for c in data.items["categories"])


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        synthetic_dataset(0, 10, 10)
