"""The simulator's truth: click probabilities from the generator's latent state, exact list values, the oracle."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from towerlight_offline.commands.simulate import parse_policy
from towerlight_offline.simulate.world import CLICK_REWARD, SimulatedWorld, WorldConfig

CONFIG = WorldConfig(users=300, items=200, events=3000, categories=8, cold_users=30)


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return SimulatedWorld.generate(CONFIG)


def test_cold_users_are_held_out_of_the_training_data(world: SimulatedWorld) -> None:
    trained = set(world.dataset.interactions["user_id"])
    assert len(world.cold_users) == 30 and not trained & set(world.cold_users)
    assert set(world.warm_users) == trained


def test_users_prefer_items_of_their_favourite_categories(world: SimulatedWorld) -> None:
    # GIVEN each user's probabilities over the catalogue, and the categories they clicked in training
    # THEN the items they interacted with have higher true click probabilities than the others, on average
    interactions = world.dataset.interactions
    lifts = []
    for user, items in list(interactions.groupby("user_id")["item_id"])[:100]:
        p = world.click_probabilities(user)
        touched = np.isin(world.item_ids, items.unique())
        lifts.append(p[touched].mean() - p[~touched].mean())
    assert np.mean(lifts) > 0.01 and np.mean(np.asarray(lifts) > 0) > 0.8


def test_a_list_value_is_the_chance_of_at_least_one_click_times_its_reward(world: SimulatedWorld) -> None:
    user, items = world.warm_users[0], list(world.item_ids[:5])
    p = world.click_probabilities(user, items) / np.log2(np.arange(2, 7))
    assert world.list_value(user, items) == pytest.approx(CLICK_REWARD * (1 - np.prod(1 - p)))
    assert world.list_value(user, []) == 0.0
    # AND the simulated clicks follow it (Monte Carlo, 20k draws: within 4 standard errors)
    rng = np.random.default_rng(1)
    rewarded = np.mean([bool(world.clicks(user, items, rng)) for _ in range(20_000)]) * CLICK_REWARD
    assert rewarded == pytest.approx(world.list_value(user, items), abs=4 * 0.5 * 0.5 / np.sqrt(20_000))


def test_the_oracle_list_beats_every_other_list_and_respects_exclusions(world: SimulatedWorld) -> None:
    user = world.warm_users[3]
    p = world.click_probabilities(user)
    best = list(world.item_ids[np.argsort(-p)[:10]])
    assert world.oracle_value(user, (), 10) == pytest.approx(world.list_value(user, best))
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert world.list_value(user, list(rng.choice(world.item_ids, 10, replace=False))) <= world.oracle_value(
            user, (), 10
        )
    assert world.list_value(user, best[::-1]) < world.list_value(user, best)  # position bias: best first
    assert world.oracle_value(user, best[:3], 10) < world.oracle_value(user, (), 10)


def test_policies_are_built_in_or_environment_assignments() -> None:
    assert parse_policy("thompson").env["TOWERLIGHT_BANDIT_STRATEGIES"] == "two_tower,content,popularity"
    custom = parse_policy("greedy:TOWERLIGHT_BANDIT_STRATEGIES=two_tower, TOWERLIGHT_EXPERIMENT=")
    assert (custom.name, dict(custom.env)) == (
        "greedy",
        {"TOWERLIGHT_BANDIT_STRATEGIES": "two_tower", "TOWERLIGHT_EXPERIMENT": ""},
    )
    pair = parse_policy("pair:TOWERLIGHT_BANDIT_STRATEGIES=content,popularity,MODEL_REFRESH_SECONDS=1")
    assert dict(pair.env) == {"TOWERLIGHT_BANDIT_STRATEGIES": "content,popularity", "MODEL_REFRESH_SECONDS": "1"}
    for bad in ("nothing", "name:", ":A=1", "name:novalue", "name:lower=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_policy(bad)
