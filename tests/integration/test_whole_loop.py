"""The serving loop with every real part: a model in moto's S3, clicks through track → SQS → ingest → Postgres,
and the next recommendation from the recommend handler changes — with no retraining in between."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.config import get_settings
from towerlight.model import registry
from towerlight.recommend import service
from towerlight_offline.local.moto_server import ensure_queue
from towerlight_offline.local.worker import QueueWorker, load_function_handler

pytestmark = pytest.mark.integration

USER = "loop-user"
CLICKED = ["1", "71", "95", "588", "99"]  # Toy Story, Lion King, Aladdin, Beauty and the Beast, Snow White


@pytest.fixture
def stack(
    published_s3_model: tuple[str, dict[str, Any]], db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The environment of a deployed stack: model in S3, a queue, a database; cold functions."""
    store_uri, manifest = published_s3_model
    monkeypatch.setenv("TOWERLIGHT_STORE", store_uri)
    monkeypatch.setenv("TOWERLIGHT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVENTS_QUEUE_URL", ensure_queue(f"loop-{uuid.uuid4().hex[:12]}", max_receive_count=None))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    get_settings.cache_clear()
    registry.reset()
    service.get_service.cache_clear()
    yield {"version": manifest["version"]}
    get_settings.cache_clear()
    registry.reset()
    service.get_service.cache_clear()


def call(module: Any, event: dict[str, Any], name: str) -> tuple[int, dict[str, Any]]:
    response = module.handler(event, LambdaContext(function_name=name))
    return response["statusCode"], json.loads(response["body"])


def recommend_event(user_id: str) -> dict[str, Any]:
    event = load_event("recommend_get.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/recommendations/{user_id}"
    event["rawQueryString"], event["pathParameters"] = "k=10", {"user_id": user_id}
    event.pop("queryStringParameters", None)
    return event


def track_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    event = load_event("track_batch.json")
    event["body"] = json.dumps({"events": events})
    event["headers"]["content-length"] = str(len(event["body"]))
    return event


def test_clicks_tracked_and_ingested_change_the_next_recommendation(
    stack: dict[str, Any], db: psycopg.Connection
) -> None:
    recommend, track = fresh_handler("recommend"), fresh_handler("track")
    worker = QueueWorker(get_settings().require_queue(), load_function_handler("Ingest"), wait_seconds=0)

    # GIVEN a user the system has never seen, who is served popularity from the S3-published model
    status, before = call(recommend, recommend_event(USER), "recommend")
    assert status == 200 and before["strategy"] == "popularity"
    assert before["model_version"] == stack["version"]

    # WHEN they click five animated films, through the track function, the queue and the ingest function
    clicks = [{"user_id": USER, "item_id": item, "event_type": "click"} for item in CLICKED]
    status, accepted = call(track, track_event(clicks), "track")
    assert status == 202
    drained = worker.drain()
    assert (drained.received, drained.deleted, drained.failed) == (5, 5, 0)
    stored = db.execute(
        "SELECT count(*) FROM events WHERE user_id = %s AND event_id = ANY(%s::uuid[])",
        (USER, accepted["event_ids"]),
    ).fetchone()
    db.rollback()
    assert stored == (5,)

    # THEN the same warm function, on the same model version, answers differently: personalised by the
    # two-tower model from the new history, and without the clicked films
    status, after = call(recommend, recommend_event(USER), "recommend")
    assert status == 200 and after["strategy"] == "two_tower"
    assert after["model_version"] == stack["version"]
    after_ids = [item["item_id"] for item in after["items"]]
    assert after_ids != [item["item_id"] for item in before["items"]]
    assert not set(after_ids) & set(CLICKED)
