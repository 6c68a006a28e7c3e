"""A warm recommend process follows CURRENT in a real S3 endpoint (moto's server) and survives bad versions.

Each test copies the trained model into a fresh bucket, then changes that bucket the way the offline
job or an operator would: promote a new version, publish a corrupted one, publish popularity only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event
from fixtures_model import copy_version

from towerlight.config import get_settings
from towerlight.model import registry
from towerlight.recommend import service
from towerlight.store import open_store
from towerlight.store.versions import download_version, new_version_id, promote, publish_version

pytestmark = pytest.mark.integration

REFRESH_SECONDS = 1.0
Model = tuple[str, dict[str, Any]]


@pytest.fixture(autouse=True)
def lambda_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TOWERLIGHT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", str(REFRESH_SECONDS))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    library = logging.getLogger("towerlight")
    saved = (library.handlers[:], library.propagate, library.level)
    yield
    forget_process_state()
    library.handlers, library.propagate, library.level = saved  # the handler hands them to Powertools


def forget_process_state() -> None:
    get_settings.cache_clear()
    registry.reset()
    service.get_service.cache_clear()


def invoke(event_name: str) -> tuple[int, dict[str, Any]]:
    """Call the recommend handler of this (warm) process with an events/ file."""
    app = fresh_handler("recommend")
    response = app.handler(load_event(event_name), LambdaContext(function_name="recommend"))
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def bucket_model(trained_model: Model, s3_store: str, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> Model:
    """The trained model copied and promoted in a fresh bucket; ``TOWERLIGHT_STORE`` points at it."""
    source_uri, manifest = trained_model
    copied = copy_version(source_uri, s3_store, manifest["version"])
    monkeypatch.setenv("TOWERLIGHT_STORE", s3_store)
    forget_process_state()
    return s3_store, copied


def republish(source: Model, target_uri: str, tmp_path: Path, names: tuple[str, ...] | None = None) -> str:
    """Publish (some of) the files of ``source``'s version as a new version of ``target_uri``."""
    source_uri, manifest = source
    model_dir, _ = download_version(open_store(source_uri), manifest["version"], tmp_path / "source")
    files = {name: model_dir / name for name in (names or tuple(manifest["files"]))}
    version = new_version_id()
    publish_version(open_store(target_uri), version, files, {"params": manifest.get("params", {})})
    return version


def corrupt(store_uri: str, version: str, name: str) -> None:
    """Overwrite one published file in the bucket behind the store's back (same size, other bytes)."""
    bucket, _, prefix = store_uri.removeprefix("s3://").partition("/")
    key = f"{prefix}/models/{version}/{name}"
    s3 = boto3.client("s3")
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def test_a_warm_process_picks_up_a_promoted_version_after_the_refresh_interval(
    bucket_model: Model, tmp_path: Path
) -> None:
    # GIVEN a second version published (not promoted), and a warm process serving the first one
    store_uri, first = bucket_model
    second = republish(bucket_model, store_uri, tmp_path)  # before: on a busy machine it outlasts the interval
    assert invoke("recommend_get.json")[1]["model_version"] == first["version"]
    # WHEN the second version is promoted
    promote(open_store(store_uri), second)
    right_after = invoke("recommend_get.json")[1]["model_version"]
    time.sleep(REFRESH_SECONDS + 0.2)
    later = invoke("recommend_get.json")[1]["model_version"]
    # THEN the process keeps the first until the interval is over, then serves the second
    assert right_after == first["version"]
    assert later == second
    assert invoke("similar_items.json")[1]["model_version"] == second


def test_a_corrupted_new_version_is_rejected_and_the_previous_one_keeps_serving(
    bucket_model: Model, tmp_path: Path
) -> None:
    # GIVEN a warm process serving the first version
    store_uri, first = bucket_model
    invoke("recommend_get.json")
    # WHEN a new version whose index file was damaged in the bucket is promoted
    broken = republish(bucket_model, store_uri, tmp_path)
    corrupt(store_uri, broken, "items.hnsw")
    promote(open_store(store_uri), broken)
    time.sleep(REFRESH_SECONDS + 0.2)
    status, body = invoke("recommend_get.json")
    # THEN the previous version is still served, and the registry says which file failed
    assert status == 200 and body["model_version"] == first["version"]
    error = registry.get_registry().status().last_error or ""
    assert broken in error and "items.hnsw" in error and "checksum" in error


def test_a_cold_process_with_a_corrupted_model_serves_its_popularity(bucket_model: Model, tmp_path: Path) -> None:
    # GIVEN a promoted version whose user tower was damaged, and a process that never loaded a model
    store_uri, _ = bucket_model
    broken = republish(bucket_model, store_uri, tmp_path)
    corrupt(store_uri, broken, "user_tower.onnx")
    promote(open_store(store_uri), broken)
    # WHEN a recommendation and similar items are asked for
    status, body = invoke("recommend_get.json")
    similar_status, similar = invoke("similar_items.json")
    # THEN the version's (intact) popularity is served, and item-to-item says it is unavailable
    assert status == 200
    assert (body["model_version"], body["strategy"]) == (broken, "popularity") and len(body["items"]) == 5
    assert similar_status == 503 and similar["error"]["code"] == "model_unavailable"


def test_a_popularity_only_version_is_served(bucket_model: Model, tmp_path: Path) -> None:
    # GIVEN a promoted version with a popularity table and a catalogue but no two-tower model
    store_uri, _ = bucket_model
    version = republish(bucket_model, store_uri, tmp_path, names=("popularity.npz", "items.npz"))
    promote(open_store(store_uri), version)
    # WHEN a recommendation is asked for, with a category filter
    status, body = invoke("recommend_get.json")
    # THEN popularity answers, with the filters applied
    assert status == 200
    assert (body["model_version"], body["strategy"]) == (version, "popularity")
    assert len(body["items"]) == 5 and not {"50", "181"} & {i["item_id"] for i in body["items"]}


def test_no_model_at_all_is_a_503_json_error(
    s3_store: str, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an empty bucket
    monkeypatch.setenv("TOWERLIGHT_STORE", s3_store)
    forget_process_state()
    # WHEN a recommendation is asked for
    status, body = invoke("recommend_get.json")
    # THEN the JSON error says no model is published yet, naming the store
    assert status == 503
    assert body["error"]["code"] == "model_unavailable"
    assert "no model is published yet" in body["error"]["message"]
    assert body["error"]["details"] == {"store": s3_store}
