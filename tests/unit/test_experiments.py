"""Experiment bucketing: stable per user, independent across experiments, faithful to the weights."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pydantic
import pytest

from towerlight.errors import ConfigurationError
from towerlight.experiments import EXPERIMENT_ENV, Experiment, Variant, bucket, current_experiment

USERS = [f"user-{n}" for n in range(60_000)]


def experiment(name: str = "exp", weights: tuple[float, ...] = (0.7, 0.2, 0.1)) -> Experiment:
    return Experiment(name=name, variants=tuple(Variant(name=f"v{i}", weight=w) for i, w in enumerate(weights)))


def test_a_user_keeps_their_variant_in_another_process() -> None:
    # GIVEN the variants of a few users computed here
    users = USERS[:50]
    here = [experiment().assign(u).name for u in users]
    # WHEN a fresh interpreter (another hash seed) computes them
    code = (
        "import json, sys; from towerlight.experiments import Experiment, Variant;"
        "e = Experiment(name='exp', variants=[Variant(name=f'v{i}', weight=w) for i, w in enumerate((0.7, 0.2, 0.1))]);"
        "print(json.dumps([e.assign(u).name for u in json.loads(sys.argv[1])]))"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(users)], capture_output=True, text=True, check=True)
    # THEN they agree
    assert json.loads(out.stdout) == here


def test_buckets_are_uniform_in_the_unit_interval() -> None:
    points = [bucket("exp", u) for u in USERS]
    assert min(points) >= 0.0 and max(points) < 1.0
    deciles = Counter(int(p * 10) for p in points)
    assert all(abs(deciles[d] / len(USERS) - 0.1) < 0.01 for d in range(10))


def test_variants_get_their_weights_share_of_users() -> None:
    # GIVEN weights 7 : 2 : 1 (not normalized)
    shares = Counter(experiment(weights=(7, 2, 1)).assign(u).name for u in USERS)
    # THEN each variant's share of 60 000 users is within 1 point of its weight
    assert shares["v0"] / len(USERS) == pytest.approx(0.7, abs=0.01)
    assert shares["v1"] / len(USERS) == pytest.approx(0.2, abs=0.01)
    assert shares["v2"] / len(USERS) == pytest.approx(0.1, abs=0.01)


def test_two_experiments_bucket_users_independently() -> None:
    # GIVEN two 50/50 experiments with different names
    a, b = experiment("a", (1, 1)), experiment("b", (1, 1))
    # THEN being in the first half of one says nothing about the other (both-first ≈ 25%)
    both = sum(a.assign(u).name == "v0" and b.assign(u).name == "v0" for u in USERS)
    assert both / len(USERS) == pytest.approx(0.25, abs=0.01)


def test_a_variant_pins_a_model_version_or_a_strategy() -> None:
    pinned = Experiment.model_validate(
        {
            "name": "pins",
            "variants": [
                {"name": "model", "weight": 1, "model_version": "20261201T020000Z-ab12cd"},
                {"name": "popular", "weight": 1e-9, "strategy": "popularity"},
            ],
        }
    )
    assert pinned.assign("u1") == Variant(name="model", weight=1, model_version="20261201T020000Z-ab12cd")


@pytest.mark.parametrize(
    "config",
    [
        {"name": "e", "variants": []},
        {"name": "e", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]},
        {"name": "e", "variants": [{"name": "a", "weight": 0}]},
        {"name": "e", "variants": [{"name": "a", "weight": 1, "strategy": "random"}]},
        {"name": "e f", "variants": [{"name": "a", "weight": 1}]},
        {"name": "e", "variants": [{"name": "a", "weight": 1, "typo": True}]},
    ],
)
def test_invalid_experiments_are_refused(config: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Experiment.model_validate(config)


def test_the_experiment_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPERIMENT_ENV, raising=False)
    assert current_experiment() is None
    monkeypatch.setenv(EXPERIMENT_ENV, json.dumps({"name": "e", "variants": [{"name": "a", "weight": 1}]}))
    assert current_experiment() == Experiment(name="e", variants=(Variant(name="a", weight=1),))
    monkeypatch.setenv(EXPERIMENT_ENV, '{"name": "e", "variants": [{"name": "a", "weight": -1}]}')
    with pytest.raises(ConfigurationError, match=r"variants\.0\.weight"):
        current_experiment()
