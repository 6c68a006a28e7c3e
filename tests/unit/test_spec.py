"""Fitting the feature spec from a Dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd

from towerlight.features import FeatureSpec
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.model.spec import fit_feature_spec, item_records


def small_dataset() -> Dataset:
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u3"],
            "item_id": ["i1", "i9", "i2", "i1"],  # i9 is not in the catalogue
            "timestamp": np.array([1, 2, 3, 4], dtype=np.int64),
            "event_type": ["click", "click", "purchase", "view"],
            "value": [np.nan] * 4,
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["i2", "i1", "i3"],
            "title": ["Heat (1995)", "Toy Story (1995)", None],
            "categories": [["Action", "Crime"], ["Comedy"], []],
            "attributes": [{"year": 1995}, {"year": 1995}, {}],
            "active": [True, True, False],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "attributes": [{"age": 24, "gender": "M"}, {"age": 53, "gender": "F", "zip_code": "94043"}],
        }
    )
    return Dataset("small", interactions, items, users)


def test_spec_holds_catalogue_items_then_interaction_only_items() -> None:
    # GIVEN a dataset with an interacted item missing from the catalogue
    dataset = small_dataset()
    # WHEN fitting the spec
    spec = fit_feature_spec(dataset, history_length=7)
    # THEN catalogue items keep their order (inactive ones included) and the unknown one comes last
    assert spec.item_ids.values == ["i2", "i1", "i3", "i9"]
    assert spec.history_length == 7
    assert spec.encode_history(["i9", "i2"]).tolist() == [4, 1]


def test_spec_encodes_content_and_user_attributes() -> None:
    # GIVEN a fitted spec
    spec = fit_feature_spec(small_dataset())
    # WHEN encoding items and users
    ids, content = spec.encode_items(item_records(small_dataset().items, ["i9"]))
    user = spec.encode_user({"age": 24, "gender": "M", "zip_code": "94043"})
    # THEN categories are tokens, the content-less items have only padding, and every user field is known
    assert ids.tolist() == [1, 2, 3, 4]
    assert (content[0] > 0).sum() >= 3  # Action, Crime, year bucket, title word
    assert (content[2:] == 0).all()
    assert "category=Action" in spec.item_tokens.values
    assert spec.user_fields == ["age", "gender", "zip_code"]
    assert all(spec.user_tokens.is_known(t) for t in ("gender=M", "zip_code=94043"))
    assert len(user) == 3 and all(v > 0 for v in user)


def test_spec_round_trips_through_json() -> None:
    # GIVEN a fitted spec
    spec = fit_feature_spec(small_dataset())
    # WHEN it is serialised and loaded back
    loaded = FeatureSpec.from_json(spec.to_json())
    # THEN it encodes exactly as before
    inputs = spec.user_inputs([["i1", "zzz"]], [{"age": 30, "gender": "F"}])
    again = loaded.user_inputs([["i1", "zzz"]], [{"age": 30, "gender": "F"}])
    for name in inputs:
        np.testing.assert_array_equal(inputs[name], again[name])


def test_item_records_tolerate_repeats_and_missing_values() -> None:
    # GIVEN a catalogue with a repeated id and missing values
    items = pd.DataFrame(
        {
            "item_id": [1, 1, 2],
            "title": ["First", "Second", float("nan")],
            "categories": [["A"], ["B"], None],
            "attributes": [{"x": 1}, {}, None],
        }
    )
    # WHEN building records
    records = item_records(items)
    # THEN ids are strings, the first row wins, and missing values become empty
    assert [(r.item_id, r.title, list(r.categories), dict(r.attributes)) for r in records] == [
        ("1", "First", ["A"], {"x": 1}),
        ("2", None, [], {}),
    ]
