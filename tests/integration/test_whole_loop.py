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
from fixtures_model import copy_version, publish_without_ranker

from towerlight.bandit.arms import ArmDelta, ArmStats, add_to_arms, read_arms
from towerlight.bandit.thompson import ThompsonSampling
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


def test_auto_requests_are_chosen_by_the_bandit_and_their_impressions_credited(
    stack: dict[str, Any], db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the bandit on over two_tower and popularity, whose counters favour popularity for warm users
    monkeypatch.setenv("TOWERLIGHT_BANDIT_STRATEGIES", "two_tower,popularity")
    service.get_service.cache_clear()
    seeded = {("warm", "two_tower"): ArmDelta(1000, 20, 20.0), ("warm", "popularity"): ArmDelta(1000, 300, 300.0)}
    with db.transaction():
        add_to_arms(db, seeded)
    before = [ArmStats(*key, d.impressions, d.successes, d.reward_sum) for key, d in seeded.items()]
    chance = ThompsonSampling(("two_tower", "popularity")).probabilities(before, "warm")
    recommend, track = fresh_handler("recommend"), fresh_handler("track")
    worker = QueueWorker(get_settings().require_queue(), load_function_handler("Ingest"), wait_seconds=0)
    clicks = [{"user_id": USER, "item_id": item, "event_type": "click"} for item in CLICKED]
    assert call(track, track_event(clicks), "track")[0] == 202
    worker.drain()
    # WHEN the (now warm) user asks for recommendations 20 times, and the queue is drained
    answers = [call(recommend, recommend_event(USER), "recommend")[1] for _ in range(20)]
    assert worker.drain().received == 20
    # THEN popularity served most of them, and each answer's impression is stored with the probability
    # its strategy had
    assert sum(a["strategy"] == "popularity" for a in answers) >= 15
    stored = db.execute("SELECT recommendation_id, segment, strategy, propensity FROM impressions").fetchall()
    assert {r[0] for r in stored} == {a["recommendation_id"] for a in answers}
    assert all(segment == "warm" and p == pytest.approx(chance[strategy]) for _, segment, strategy, p in stored)
    # WHEN the user clicks an item of the first answer, echoing its recommendation_id
    first = answers[0]
    click = {"user_id": USER, "item_id": first["items"][0]["item_id"], "event_type": "click"}
    call(track, track_event([click | {"recommendation_id": first["recommendation_id"]}]), "track")
    worker.drain()
    # THEN that arm gained its impressions and exactly one rewarded one
    arms = {(a.segment, a.strategy): a for a in read_arms(db)}
    db.rollback()
    arm = arms[("warm", first["strategy"])]
    served = sum(a["strategy"] == first["strategy"] for a in answers)
    assert (arm.impressions, arm.successes) == (1000 + served, seeded[("warm", first["strategy"])].successes + 1)


def test_an_ab_test_of_two_model_versions_shows_both_in_admin_stats(
    stack: dict[str, Any],
    published_s3_model: tuple[str, dict[str, Any]],
    s3_store: str,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a bucket whose CURRENT is the trained version, the same model without its ranker beside it, and an
    # experiment sending half the users to each
    source_uri, version = published_s3_model[0], stack["version"]
    copy_version(source_uri, s3_store, version)
    second = publish_without_ranker(source_uri, version, s3_store)
    variants = [{"name": "control", "weight": 1}, {"name": "no-ranker", "weight": 1, "model_version": second}]
    monkeypatch.setenv("TOWERLIGHT_STORE", s3_store)
    monkeypatch.setenv("TOWERLIGHT_EXPERIMENT", json.dumps({"name": "ranker-ab", "variants": variants}))
    get_settings.cache_clear()
    service.get_service.cache_clear()
    registry.reset()
    recommend, track, admin = fresh_handler("recommend"), fresh_handler("track"), fresh_handler("admin")
    worker = QueueWorker(get_settings().require_queue(), load_function_handler("Ingest"), wait_seconds=0)
    users = [f"ab-{n}" for n in range(30)]
    assert (
        call(
            track,
            track_event([{"user_id": u, "item_id": i, "event_type": "click"} for u in users for i in CLICKED[:2]]),
            "track",
        )[0]
        == 202
    )
    worker.drain()
    # WHEN each user is recommended to, and every user of the control and every other user of the
    # no-ranker variant click the first item, echoing the recommendation
    answers = [call(recommend, recommend_event(user), "recommend")[1] for user in users]
    clicked = [a for n, a in enumerate(answers) if a["variant"] == "control" or n % 2 == 0]
    clicks = [
        {
            "user_id": a["user_id"],
            "item_id": a["items"][0]["item_id"],
            "event_type": "click",
            "recommendation_id": a["recommendation_id"],
        }
        for a in clicked
    ]
    assert call(track, track_event(clicks), "track")[0] == 202
    worker.drain()
    # THEN each variant was served by its version, and admin stats show both with their click-through
    assert {(a["variant"], a["model_version"]) for a in answers} == {("control", version), ("no-ranker", second)}
    status, body = call(admin, load_event("admin_stats_online.json"), "admin")
    assert status == 200
    stats = {v["variant"]: v for v in body["variants"]}
    for name, model_version in (("control", version), ("no-ranker", second)):
        served = [a for a in answers if a["variant"] == name]
        ctr = stats[name]["ctr"]
        assert stats[name]["model_versions"] == [model_version] and stats[name]["impressions"] == len(served)
        assert ctr["value"] == pytest.approx(sum(a in clicked for a in served) / len(served), abs=1e-6)
        assert ctr["low"] <= ctr["value"] <= ctr["high"]
