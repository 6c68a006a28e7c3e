"""ONNX export of the towers: contract names, dynamic shapes, parity with torch, and a broken export caught."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from towerlight.artifacts import ITEM_TOWER, ITEM_TOWER_INPUTS, TOWER_OUTPUT, USER_TOWER, USER_TOWER_INPUTS
from towerlight.errors import ArtifactError
from towerlight.features import ItemRecord
from towerlight.model.sessions import onnx_session
from towerlight_offline import export
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.export import ParityError, export_towers
from towerlight_offline.model import TwoTowerParams, fit_feature_spec, train_two_tower
from towerlight_offline.model.train import round_to_float16


def random_dataset(n_users: int = 30, n_items: int = 25, n_events: int = 300) -> Dataset:
    rng = np.random.default_rng(1)
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, n_users, n_events)],
            "item_id": [f"i{i}" for i in rng.integers(0, n_items, n_events)],
            "timestamp": np.arange(n_events, dtype=np.int64),
            "event_type": "view",
            "value": np.nan,
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Title number {i % 7}" for i in range(n_items)],
            "categories": [[f"c{i % 3}"] for i in range(n_items)],
            "attributes": [{"year": 1990 + i % 10} for i in range(n_items)],
            "active": True,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(n_users)],
            "attributes": [{"age": 18 + u, "gender": "MF"[u % 2]} for u in range(n_users)],
        }
    )
    return Dataset("random", interactions, items, users)


@pytest.fixture(scope="module")
def trained():
    dataset = random_dataset()
    spec = fit_feature_spec(dataset, history_length=12)
    params = TwoTowerParams(dim=16, hidden=32, epochs=2, batch_size=64, num_threads=1)
    return train_two_tower(dataset.interactions, dataset.items, dataset.users, spec, params, progress=False)


def test_export_writes_towers_with_the_contract_names(trained, tmp_path: Path) -> None:
    # GIVEN a trained model
    # WHEN exporting it (parity is checked inside)
    paths = export_towers(trained, tmp_path / "model")
    # THEN both files exist with the input and output names serving expects
    assert set(paths) == {USER_TOWER, ITEM_TOWER}
    for name, inputs in ((USER_TOWER, USER_TOWER_INPUTS), (ITEM_TOWER, ITEM_TOWER_INPUTS)):
        session = onnx_session(paths[name])
        assert [i.name for i in session.get_inputs()] == list(inputs)
        assert [o.name for o in session.get_outputs()] == [TOWER_OUTPUT]


def test_exported_towers_accept_any_batch_and_length_and_match_torch(trained, tmp_path: Path) -> None:
    # GIVEN exported towers
    paths = export_towers(trained, tmp_path, check=False)
    users = onnx_session(paths[USER_TOWER])
    items = onnx_session(paths[ITEM_TOWER])
    spec = trained.spec
    # WHEN running them on batches of other sizes and lengths than the export example
    histories = [[], ["i1"], [f"i{i}" for i in range(12)], ["new-item", "i3"]]
    attributes = [None, {"age": 20}, {"gender": "F"}, {"age": 99, "gender": "X"}]
    user_inputs = spec.user_inputs(histories, attributes)
    (user_vectors,) = users.run([TOWER_OUTPUT], user_inputs)
    records = [*trained.item_records[:5], ItemRecord("new", "Title number 3", ["c1"], {"year": 1995})]
    item_ids, content = spec.encode_items(records)
    (item_vectors,) = items.run([TOWER_OUTPUT], {"item": item_ids, "item_content": content})
    # THEN they return one unit vector per row, equal to the torch model's
    assert user_vectors.shape == (4, 16) and item_vectors.shape == (6, 16)
    np.testing.assert_allclose(user_vectors, trained.user_embeddings(histories, attributes), atol=1e-5)
    # (item_embeddings() are rounded to float16 as items.npz publishes them: half an ulp is < 5e-4)
    np.testing.assert_allclose(item_vectors[:5], trained.item_embeddings()[:5], atol=5e-4)
    np.testing.assert_allclose(np.linalg.norm(item_vectors, axis=1), 1.0, atol=1e-5)


def test_towers_store_the_item_id_table_as_float16(trained, tmp_path: Path) -> None:
    # GIVEN exported towers
    paths = export_towers(trained, tmp_path, check=False)
    table_shape = [trained.spec.item_ids.size, trained.params.dim]
    for name in (USER_TOWER, ITEM_TOWER):
        # WHEN reading the file's weights
        weights = {tuple(w.dims): w.data_type for w in onnx.load(str(paths[name])).graph.initializer}
        # THEN the id table is float16 (and every other weight float32)
        assert weights.pop(tuple(table_shape)) == onnx.TensorProto.FLOAT16
        assert set(weights.values()) <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


def test_a_table_float16_cannot_represent_is_refused() -> None:
    # GIVEN an id table with a value float16 would round
    table = torch.nn.Embedding(3, 2)
    with torch.no_grad():
        table.weight.fill_(0.1)
    # WHEN / THEN the float16 lookup refuses it rather than export other weights than were evaluated
    with pytest.raises(ValueError, match="round it first"):
        export.Float16Lookup(table)
    round_to_float16(table)
    assert export.Float16Lookup(table)(torch.tensor([1])).dtype == torch.float32


def test_parity_check_reports_small_differences(trained, tmp_path: Path) -> None:
    # GIVEN an honest export
    paths = export_towers(trained, tmp_path, check=False)
    # WHEN checking parity
    diffs = export.check_parity(trained, paths)
    # THEN both towers agree with torch well within the tolerance
    assert set(diffs) == {USER_TOWER, ITEM_TOWER}
    assert max(diffs.values()) <= export.PARITY_TOLERANCE


def test_broken_export_raises_parity_error(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an exporter that writes slightly different weights than the trained ones
    real_export = export._export_module

    def export_perturbed(module: torch.nn.Module, *args: object, **kwargs: object) -> None:
        broken = copy.deepcopy(module)
        with torch.no_grad():
            for parameter in broken.parameters():
                parameter.add_(0.01)
        real_export(broken, *args, **kwargs)

    monkeypatch.setattr(export, "_export_module", export_perturbed)
    # WHEN exporting
    # THEN the parity check refuses it, as an artifact error carrying the measured difference
    with pytest.raises(ParityError) as caught:
        export_towers(trained, tmp_path)
    assert isinstance(caught.value, ArtifactError)
    assert caught.value.details["max_abs_diff"] > export.PARITY_TOLERANCE
