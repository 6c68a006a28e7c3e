"""A real trained model, published once per test session: for functional tests of the serving side.

``trained_model`` runs the real pipeline (torch training, ONNX export with parity check, hnswlib index,
popularity, publish, gate, promote) on a 150-user MovieLens slice into a ``file://`` store;
``published_s3_model`` publishes the same version into a bucket of the moto S3 endpoint. Both return
``(store_uri, manifest)`` with ``CURRENT`` naming the version.

Loaded from tests/conftest.py through ``pytest_plugins = [..., "fixtures_model"]``.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from towerlight.store import open_store
from towerlight.store.versions import download_version, promote, publish_version
from towerlight_offline.local.moto_server import ensure_bucket

MODEL_USERS = 150
MODEL_EPOCHS = 4
PUBLISH_KEYS = ("version", "created_at", "schema_version", "files")  # written by publish_version itself


def train_small_model(store_uri: str, *, users: int = MODEL_USERS, epochs: int = MODEL_EPOCHS) -> dict[str, Any]:
    """Run the real pipeline on a MovieLens slice into ``store_uri``; returns the published manifest."""
    from towerlight_offline.data.movielens import load_movielens_dataset
    from towerlight_offline.model.train import TwoTowerParams
    from towerlight_offline.pipeline import TrainConfig, run_training

    dataset = load_movielens_dataset(max_users=users)
    config = TrainConfig(
        source=f"movielens-100k, first {users} users",
        store_uri=store_uri,
        two_tower=TwoTowerParams(epochs=epochs),
        refit_on_all=False,  # the evaluated model is the served one: half the training time
    )
    result = run_training(dataset, config, progress=False)
    assert result.promoted, result.outcome
    return result.manifest


def copy_version(source_uri: str, target_uri: str, version: str) -> dict[str, Any]:
    """Publish an existing version (files verified on download) under the same id in another store."""
    with tempfile.TemporaryDirectory(prefix="towerlight-copy-") as tmp:
        model_dir, manifest = download_version(open_store(source_uri), version, Path(tmp))
        files = {name: model_dir / name for name in manifest["files"]}
        body = {key: value for key, value in manifest.items() if key not in PUBLISH_KEYS}
        target = open_store(target_uri)
        copied = publish_version(target, version, files, body)
    promote(target, version)
    return copied


def publish_without_ranker(source_uri: str, version: str, target_uri: str) -> str:
    """Publish ``version`` without its ranker, under a new id, in ``target_uri`` (not promoted).

    Another servable version of the same catalogue, as for an A/B test of the second stage.
    """
    second = f"{version}-no-ranker"
    with tempfile.TemporaryDirectory(prefix="towerlight-no-ranker-") as tmp:
        model_dir, manifest = download_version(open_store(source_uri), version, Path(tmp))
        files = {name: model_dir / name for name in manifest["files"] if not name.startswith("ranker")}
        body = {key: value for key, value in manifest.items() if key not in PUBLISH_KEYS}
        publish_version(open_store(target_uri), second, files, body)
    return second


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """``(store_uri, manifest)`` of a real model published and promoted in a ``file://`` store."""
    store_uri = (tmp_path_factory.mktemp("trained-model") / "store").as_uri()
    return store_uri, train_small_model(store_uri)


@pytest.fixture(scope="session")
def published_s3_model(moto_endpoint: str, trained_model: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``(store_uri, manifest)`` of the same model published and promoted in a bucket of the moto endpoint."""
    source_uri, manifest = trained_model
    suffix = uuid.uuid4().hex[:12]
    bucket = f"towerlight-model-{suffix}"
    ensure_bucket(bucket, endpoint_url=moto_endpoint)
    store_uri = f"s3://{bucket}/store-{suffix}"
    return store_uri, copy_version(source_uri, store_uri, manifest["version"])
