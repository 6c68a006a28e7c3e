"""The per-user chronological split: chronology, at least one test event per user, nothing lost or shared."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from towerlight_offline.split import chronological_split, cold_start_split, user_histories, validation_split


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _random_events(seed: int, n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, 150, n).astype(str),
            "item_id": rng.integers(0, 300, n).astype(str),
            "timestamp": rng.integers(0, 50, n),  # few distinct values: many ties
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_chronological_per_user_with_no_overlap(seed: int) -> None:
    # GIVEN random events with many timestamp ties
    events = _random_events(seed)
    # WHEN they are split
    split = chronological_split(events)
    # THEN every event lands in exactly one side
    assert sorted(split.train.index.tolist() + split.test.index.tolist()) == events.index.tolist()
    # AND no user's test event is older than any of their train events
    last_train = split.train.groupby("user_id")["timestamp"].max()
    first_test = split.test.groupby("user_id")["timestamp"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_every_user_with_two_or_more_events_has_test_and_train_events(seed: int) -> None:
    # GIVEN random events
    events = _random_events(seed)
    counts = events.groupby("user_id").size()
    # WHEN they are split
    split = chronological_split(events)
    # THEN users with >= 2 events have at least one event on each side, single-event users none in test
    test_users = set(split.test["user_id"])
    train_users = set(split.train["user_id"])
    assert test_users == set(counts.index[counts >= 2])
    assert train_users == set(counts.index)


@pytest.mark.parametrize(("n_events", "n_test"), [(1, 0), (2, 1), (3, 1), (5, 1), (8, 2), (10, 2), (13, 3)])
def test_test_size_is_the_rounded_fraction_with_at_least_one(n_events: int, n_test: int) -> None:
    # GIVEN one user with n events
    events = _events([("u", f"i{t}", t) for t in range(n_events)])
    # WHEN split with the default 20%
    split = chronological_split(events)
    # THEN the most recent round(0.2 n) events (at least one, at most n - 1) are test
    assert split.test["item_id"].tolist() == [f"i{t}" for t in range(n_events - n_test, n_events)]


def test_ties_keep_input_order_and_the_split_is_deterministic() -> None:
    # GIVEN five events at the same second
    events = _events([("u", item, 7) for item in "abcde"])
    # WHEN split twice
    first, second = chronological_split(events), chronological_split(events)
    # THEN the row that came last in the input is the test event, both times
    assert first.test["item_id"].tolist() == ["e"] == second.test["item_id"].tolist()
    pd.testing.assert_frame_equal(first.train, second.train)


def test_input_order_does_not_matter_apart_from_ties() -> None:
    # GIVEN events with distinct timestamps, shuffled
    events = _events([("u", f"i{t}", t) for t in range(10)] + [("v", f"j{t}", t) for t in range(5)])
    shuffled = events.sample(frac=1.0, random_state=3)
    # WHEN both orders are split
    a, b = chronological_split(events), chronological_split(shuffled)
    # THEN the same rows are held out
    assert sorted(a.test.index) == sorted(b.test.index)


def test_validation_split_applies_the_same_rule_inside_train() -> None:
    # GIVEN a train split
    train = chronological_split(_random_events(5)).train
    # WHEN it is split again for validation
    validation = validation_split(train)
    # THEN it is exactly the chronological split of the train frame, never touching test rows
    expected = chronological_split(train)
    pd.testing.assert_frame_equal(validation.test, expected.test)
    assert set(validation.train.index) | set(validation.test.index) == set(train.index)


def test_fraction_must_be_between_zero_and_one() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        chronological_split(_events([("u", "a", 1)]), test_fraction=1.0)


def test_user_histories_are_most_recent_first() -> None:
    # GIVEN events out of order
    events = _events([("u", "b", 2), ("v", "x", 1), ("u", "a", 1), ("u", "c", 3)])
    # WHEN histories are built
    histories = user_histories(events)
    # THEN each user's items come newest first
    assert histories == {"u": ["c", "b", "a"], "v": ["x"]}


def test_a_cold_start_split_keeps_only_the_first_events_of_the_chosen_users() -> None:
    # GIVEN a split of shuffled random events
    split = chronological_split(_random_events(3).sample(frac=1.0, random_state=0))
    histories = user_histories(split.train)
    chosen = {user: n for user, n in zip(sorted(histories)[:40], [1, 2, 3, 4] * 10, strict=True)}
    # WHEN the chosen users are cut to their first 1-4 training events
    cold = cold_start_split(split, chosen)
    # THEN each chosen user keeps exactly their oldest n events, the others keep theirs, test is untouched
    cut = user_histories(cold.train)
    for user, history in histories.items():
        assert cut[user] == (history[-chosen[user] :] if user in chosen else history)
    assert cold.test is split.test
    assert cold.train.index.isin(split.train.index).all()
