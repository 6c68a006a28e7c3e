"""The serving refit: trained in a spawned process, or here when none can run, always the same model."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
from test_towers import TOY_PARAMS, toy_dataset

from towerlight_offline.data.dataset import Dataset
from towerlight_offline.model import fit_feature_spec, train_two_tower
from towerlight_offline.refit import Refit, start_refit, usable_cpus


@pytest.fixture(scope="module")
def toy() -> Dataset:
    return toy_dataset()


def _args(toy: Dataset) -> tuple:
    spec = fit_feature_spec(toy, history_length=8)
    return (toy.interactions, toy.items, toy.users, spec, TOY_PARAMS)


@pytest.mark.skipif(usable_cpus() < 2, reason="a background refit needs two CPUs")
def test_a_background_refit_gives_the_model_trained_in_process(toy: Dataset) -> None:
    # GIVEN a refit started in a second process
    refit = start_refit(*_args(toy))
    assert refit.in_background
    # WHEN its result is awaited, and the same training runs here
    background = refit.result()
    here = train_two_tower(*_args(toy), progress=False)
    # THEN both are the same model
    np.testing.assert_array_equal(background.item_embeddings(), here.item_embeddings())


def test_without_background_the_refit_trains_when_its_result_is_asked(toy: Dataset) -> None:
    # GIVEN a refit that may not use a second process
    refit = start_refit(*_args(toy), background=False)
    # WHEN its result is asked for
    # THEN it trained then, in this process, the same model as a direct training
    assert not refit.in_background
    expected = train_two_tower(*_args(toy), progress=False)
    np.testing.assert_array_equal(refit.result().item_embeddings(), expected.item_embeddings())


def test_a_refit_whose_process_died_is_trained_here(toy: Dataset) -> None:
    # GIVEN a background refit whose process was killed
    died: Future = Future()
    died.set_exception(BrokenProcessPool("killed"))
    refit = Refit(_args(toy), None, died)
    # WHEN its result is asked for
    # THEN the towers are trained in this process instead of failing the run
    expected = train_two_tower(*_args(toy), progress=False)
    np.testing.assert_array_equal(refit.result().item_embeddings(), expected.item_embeddings())
