"""The whole offline job on a MovieLens slice: publish, verify, promote, then gate out a worse model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from towerlight import artifacts
from towerlight.store import open_store
from towerlight.store.versions import current_version, download_version, list_versions, read_manifest
from towerlight_offline.data.movielens import load_movielens_dataset
from towerlight_offline.model.train import TwoTowerParams
from towerlight_offline.pipeline import TrainConfig, run_training

pytestmark = pytest.mark.e2e

USERS = 300  # on 150 users the two-tower/popularity margin depends on the seed; on 300 it is ~70%
MODELS = ("two_tower", "two_tower_ranker", "popularity", "item_knn", "als")


def test_train_publish_promote_then_gate_out_a_worse_model(tmp_path: Path) -> None:
    # GIVEN a MovieLens slice and an empty store
    dataset = load_movielens_dataset(max_users=USERS)
    store_uri = (tmp_path / "store").as_uri()
    config = TrainConfig(
        source=f"movielens-100k, first {USERS} users",
        store_uri=store_uri,
        two_tower=TwoTowerParams(epochs=3),
        refit_on_all=False,
    )

    # WHEN the pipeline runs
    first = run_training(dataset, config, progress=False)

    # THEN a complete version is published and promoted
    store = open_store(store_uri)
    assert first.promoted and current_version(store) == first.version
    manifest = read_manifest(store, first.version)
    assert set(artifacts.REQUIRED_FILES) <= set(manifest["files"])
    # AND every file verifies against its checksum on download
    model_dir, _ = download_version(store, first.version, tmp_path / "download")
    # AND the manifest carries the evaluation table of every model, the index and parity figures
    for model in MODELS:
        assert {"recall@10", "ndcg@10", "recall@50", "coverage@10", "users"} <= set(manifest["metrics"][model])
    assert manifest["index"]["recall"] >= 0.95 and isinstance(manifest["params"]["index"]["ef"], int)
    assert manifest["parity"]["user_tower_max_abs_diff"] <= 1e-4
    assert manifest["gate"]["promote"] is True
    # AND the served row is retrieval + ranker, published as JSON with its tables, baselines tuned on validation
    assert manifest["evaluation"]["served_row"] == "two_tower_ranker"
    assert {artifacts.RANKER, artifacts.RANKER_TABLES} <= set(manifest["files"])
    assert manifest["evaluation"]["ranker"]["chosen"] in ("linear", "trees")
    # (trees come as ranker.onnx too, for onnxruntime)
    assert (artifacts.RANKER_ONNX in manifest["files"]) == (manifest["evaluation"]["ranker"]["chosen"] == "trees")
    assert manifest["evaluation"]["baseline_tuning"]["chosen"] == manifest["params"]["baselines"]
    # AND the two-tower model beats popularity on this slice
    metrics = manifest["metrics"]
    assert metrics["two_tower"]["ndcg@10"] > metrics["popularity"]["ndcg@10"]
    # AND the arrays follow the artifact contract
    with np.load(model_dir / artifacts.ITEMS, allow_pickle=False) as items:
        n_items = len(items["item_ids"])
        assert len(items["category_offsets"]) == n_items + 1
        assert items["vectors"].dtype == np.float16 and items["vector_of_item"].shape == (n_items,)
        assert items["index_center"].shape == (items["vectors"].shape[1],)
    with np.load(model_dir / artifacts.POPULARITY, allow_pickle=False) as popularity:
        assert np.all(np.diff(popularity["scores"]) <= 0)
        assert len(popularity["segment_offsets"]) == len(popularity["segments"]) + 1

    # WHEN a much worse model (untrained towers) is published into the same store
    worse_config = replace(config, two_tower=TwoTowerParams(epochs=0), baselines=False, ranker=False)
    worse = run_training(dataset, worse_config, progress=False)

    # THEN it is published but the gate keeps the first version current
    assert not worse.promoted and worse.decision.promote is False
    assert worse.manifest["gate"]["current_version"] == first.version
    assert current_version(store) == first.version
    assert [v["version"] for v in list_versions(store)] == [worse.version, first.version]


def test_the_gate_compares_both_models_on_the_same_later_events(tmp_path: Path) -> None:
    # GIVEN a version trained on the events before a cut-off and promoted
    dataset = load_movielens_dataset(max_users=USERS)
    cut = float(np.quantile(dataset.interactions["timestamp"], 0.7))
    earlier = replace(dataset, interactions=dataset.interactions[dataset.interactions["timestamp"] <= cut])
    config = TrainConfig(
        source="movielens slice",
        store_uri=(tmp_path / "store").as_uri(),
        two_tower=TwoTowerParams(epochs=3),
        refit_on_all=False,
        baselines=False,
    )
    first = run_training(earlier, config, progress=False)
    assert first.promoted and first.manifest["gate"]["same_events"] == {"skipped": "no current version"}

    # WHEN a model with untrained towers is trained on the whole window, later events included
    worse = run_training(dataset, replace(config, two_tower=TwoTowerParams(epochs=0), ranker=False), progress=False)

    # THEN both models were scored on the same users' events after the first window, which neither trained on
    gate = worse.manifest["gate"]
    duel = gate["same_events"]
    assert gate["basis"] == "same events" and duel["current_version"] == first.version
    assert duel["users"] >= 20 and duel["new"]["users"] == duel["current"]["users"] == duel["users"]
    assert duel["after"] == first.manifest["data"]["window"]["end"]
    # AND the gate compared those two figures, not the first run's recorded ones, and kept the trained model
    assert gate["new"] == duel["new"]["ndcg@10"] and gate["current"] == duel["current"]["ndcg@10"]
    assert gate["current"] != first.manifest["metrics"]["two_tower_ranker"]["ndcg@10"]
    assert not worse.promoted and "events after" in gate["reason"]

    # WHEN a trained model on the whole window follows
    better = run_training(dataset, config, progress=False)

    # THEN it wins on the same later events and is promoted
    gate = better.manifest["gate"]
    assert gate["basis"] == "same events" and gate["new"] > gate["current"] * 0.99
    assert better.promoted and gate["same_events"]["current_version"] == first.version
