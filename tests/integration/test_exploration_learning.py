"""Item exploration learned end to end: decisions and clicks through the ingest handler into real Postgres, the
VW model versioned in moto's S3; exactly once under replays, concurrent learners and lost swaps."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.config import get_settings
from towerlight.db.connection import connect
from towerlight.db.events import EventRow, insert_events
from towerlight.errors import PointerConflictError
from towerlight.exploration.features import vw_example
from towerlight.exploration.learning import LEARNER_LOCK, ExplorationLearner, LearnResult
from towerlight.exploration.model import VWModelCache, model_key, publish_vw_model, read_vw_pointer
from towerlight.exploration.records import Exploration
from towerlight.exploration.settings import ExplorationSettings
from towerlight.impressions import Impression, impression_message
from towerlight.model import registry
from towerlight.queue import send_messages
from towerlight.recommend import service
from towerlight.store import ArtifactStore, open_store
from towerlight_offline.local.moto_server import ensure_queue
from towerlight_offline.local.worker import QueueWorker

pytestmark = pytest.mark.integration

SHARED = "shared |User h=3 seg=warm s=two_tower c=Drama"
OPTIONS = ["a", "b", "c", "d"]
ACTIONS = [f"|Item id={item} |Rank r={i}" for i, item in enumerate(OPTIONS)]
LIKED = "c"  # the item users click when it is shown
HISTORY = ["1", "71", "95", "588", "99"]  # animated films: a warm user for the trained model


def forget_process_state() -> None:
    get_settings.cache_clear()
    registry.reset()
    service.get_service.cache_clear()


@pytest.fixture
def store(s3_store: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArtifactStore]:
    """Exploration on, decisions learnable at once, on an S3 store of moto's server and a fresh database."""
    for name, value in {
        "TOWERLIGHT_STORE": s3_store,
        "TOWERLIGHT_EXPLORATION_EPSILON": "0.2",
        "TOWERLIGHT_EXPLORATION_WINDOW_SECONDS": "0",
        "TOWERLIGHT_EXPLORATION_LEARN_SECONDS": "0",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "TowerlightTest",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield open_store(s3_store)
    get_settings.cache_clear()


def sqs_batch(bodies: list[str]) -> dict[str, Any]:
    template = load_event("ingest_batch.json")["Records"][0]
    return {"Records": [template | {"messageId": str(uuid.uuid4()), "body": body} for body in bodies]}


def uniform_logs(n: int, seed: int = 3) -> list[str]:
    """``n`` decisions that showed one of four items uniformly, and a click for each time ``LIKED`` was shown."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(n):
        rec, chosen = str(uuid.uuid4()), rng.randrange(len(OPTIONS))
        decision = Exploration(1, OPTIONS[chosen], chosen, 0.25, chosen == 0, SHARED, tuple(ACTIONS))
        shown = (OPTIONS[chosen],)
        now = datetime.now(UTC)
        bodies.append(
            impression_message(Impression(rec, "u1", "warm", "two_tower", "v1", shown, 1.0, now, exploration=decision))
        )
        if OPTIONS[chosen] == LIKED:
            click = {"user_id": "u1", "item_id": LIKED, "event_type": "click", "recommendation_id": rec}
            bodies.append(json.dumps(click | {"event_id": str(uuid.uuid4())}))
    return bodies


def test_ingested_clicks_teach_the_model_to_prefer_the_clicked_item_once(
    store: ArtifactStore, db: psycopg.Connection
) -> None:
    ingest = fresh_handler("ingest")
    batch = sqs_batch(uniform_logs(200))
    # WHEN 200 uniformly explored decisions and their clicks go through ingest
    response = ingest.handler(batch, LambdaContext(function_name="ingest"))
    # THEN the batch succeeded, and the model in S3 learned each decision once
    assert response["batchItemFailures"] == []
    pointer, _ = read_vw_pointer(store)
    assert pointer is not None and pointer.examples == 200
    # AND recommend's cache, loading it from S3, now exploits the clicked item with ε spread over the rest
    model = VWModelCache(lambda: store, epsilon=0.2).current()
    assert model is not None and model.version == pointer.version
    pmf = model.pmf(vw_example(SHARED, ACTIONS))
    assert pmf == pytest.approx([0.05, 0.05, 0.85, 0.05])
    # WHEN SQS redelivers the same batch
    ingest.handler(batch, LambdaContext(function_name="ingest"))
    # THEN nothing is learned twice: the same version and count
    assert read_vw_pointer(store)[0] == pointer


def settings() -> ExplorationSettings:
    return ExplorationSettings(epsilon=0.2, window_seconds=0, learn_seconds=0)


def test_a_learner_that_finds_another_at_work_skips_its_pass(store: ArtifactStore, db: psycopg.Connection) -> None:
    # GIVEN stored decisions, and another consumer in the middle of a pass (holding the learner lock)
    ingest = fresh_handler("ingest")
    ingest.handler(sqs_batch(uniform_logs(10)), LambdaContext(function_name="ingest"))
    before, _ = read_vw_pointer(store)
    with connect() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", LEARNER_LOCK)
        # WHEN this consumer's pass starts
        result = ExplorationLearner(settings(), store=lambda: store).learn()
    # THEN it skipped without publishing anything
    assert result == LearnResult(skipped="busy")
    assert read_vw_pointer(store)[0] == before


def test_a_learner_that_loses_the_swap_discards_its_version(store: ArtifactStore, db: psycopg.Connection) -> None:
    # GIVEN a learner that read CURRENT before another one published over it
    ingest = fresh_handler("ingest")
    ingest.handler(sqs_batch(uniform_logs(10)), LambdaContext(function_name="ingest"))
    seen, etag = read_vw_pointer(store)
    assert seen is not None
    winner = publish_vw_model(
        store,
        b"model",
        learned=5,
        learned_through=seen.learned_through or (datetime.now(UTC), ""),
        current=seen,
        etag=etag,
    )
    # WHEN the slow learner publishes with the pointer it read
    with pytest.raises(PointerConflictError):
        publish_vw_model(store, b"late", learned=5, learned_through=(datetime.now(UTC), "z"), current=seen, etag=etag)
    # THEN CURRENT is the winner's, counted once, and only the winner's model is stored beside the one before it
    assert read_vw_pointer(store)[0] == winner and winner.examples == seen.examples + 5
    assert store.exists(model_key(winner.version)) and store.exists(model_key(seen.version))
    assert len(store.list_prefixes("bandit/vw")) == 2


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_model_file_that_is_missing_or_corrupt_does_not_stop_learning(
    store: ArtifactStore, db: psycopg.Connection, damage: str
) -> None:
    # GIVEN a learned model whose file was then lost or damaged, and new decisions with their clicks
    ingest = fresh_handler("ingest")
    ingest.handler(sqs_batch(uniform_logs(10)), LambdaContext(function_name="ingest"))
    broken, _ = read_vw_pointer(store)
    assert broken is not None
    if damage == "missing":
        store.delete(model_key(broken.version))
    else:
        store.put_bytes(model_key(broken.version), b"not a model")
    ingest.handler(sqs_batch(uniform_logs(200, seed=4)), LambdaContext(function_name="ingest"))
    # WHEN the next pass learns (the one inside that batch's handler call)
    pointer, _ = read_vw_pointer(store)
    # THEN it learned them from a fresh model and published it: learning goes on
    assert pointer is not None and pointer.version != broken.version and pointer.previous == broken.version
    model = VWModelCache(lambda: store, epsilon=0.2).current()
    assert model is not None and model.version == pointer.version
    assert model.pmf(vw_example(SHARED, ACTIONS)) == pytest.approx([0.05, 0.05, 0.85, 0.05])


def test_admin_online_stats_show_the_model_and_the_rewards_of_explored_and_exploited_decisions(
    store: ArtifactStore, db: psycopg.Connection
) -> None:
    # GIVEN 40 decisions learned, where only the explored item c (never the greedy first one) was clicked
    logs = uniform_logs(40)
    fresh_handler("ingest").handler(sqs_batch(logs), LambdaContext(function_name="ingest"))
    decisions = [json.loads(body)["impression"]["exploration"] for body in logs if body.startswith('{"impression"')]
    greedy = sum(d["greedy"] for d in decisions)
    clicked = sum(d["item_id"] == LIKED for d in decisions)
    # WHEN an operator asks for the online statistics
    response = fresh_handler("admin").handler(
        load_event("admin_stats_online.json"), LambdaContext(function_name="admin")
    )
    exploration = json.loads(response["body"])["exploration"]
    # THEN they show the configured rate, the model learned, and each kind of decision's mean reward
    pointer, _ = read_vw_pointer(store)
    assert pointer is not None
    assert exploration["epsilon"] == 0.2
    assert exploration["model"]["version"] == pointer.version and exploration["model"]["examples"] == 40
    assert exploration["decisions"] == 40
    assert exploration["exploited"]["decisions"] == greedy and exploration["exploited"]["mean_reward"]["value"] == 0
    explored = exploration["explored"]
    assert explored["decisions"] == 40 - greedy
    assert explored["mean_reward"]["value"] == pytest.approx(0.5 * clicked / (40 - greedy), abs=1e-6)
    assert explored["mean_reward"]["low"] < explored["mean_reward"]["value"] < explored["mean_reward"]["high"]


def test_recommend_ingest_recommend_the_decisions_travel_through_sqs_and_the_next_ones_use_the_learned_model(
    published_s3_model: tuple[str, dict[str, Any]], db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the whole stack: the trained model in S3, a queue, exploration on, the VW model re-read on every request
    store_uri, _ = published_s3_model
    for name, value in {
        "TOWERLIGHT_STORE": store_uri,
        "TOWERLIGHT_CACHE_DIR": str(tmp_path / "cache"),
        "EVENTS_QUEUE_URL": ensure_queue(f"explore-{uuid.uuid4().hex[:12]}", max_receive_count=None),
        "MODEL_REFRESH_SECONDS": "0",
        "TOWERLIGHT_EXPLORATION_EPSILON": "0.5",
        "TOWERLIGHT_EXPLORATION_WINDOW_SECONDS": "0",
        "TOWERLIGHT_EXPLORATION_LEARN_SECONDS": "0",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "TowerlightTest",
    }.items():
        monkeypatch.setenv(name, value)
    forget_process_state()
    store = open_store(store_uri)
    with connect() as conn, conn.transaction():
        history = [EventRow(str(uuid.uuid4()), "explorer", item, "click", None, datetime.now(UTC)) for item in HISTORY]
        insert_events(conn, history)
    recommend = fresh_handler("recommend")
    # Imported afresh: its learner reads this test's store (an ingest module another test imported would not)
    worker = QueueWorker(get_settings().require_queue(), fresh_handler("ingest").handler, wait_seconds=0)
    event = load_event("recommend_explain.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/recommendations/explorer"
    event["pathParameters"] = {"user_id": "explorer"}
    try:
        # WHEN the user asks 12 times, clicks the first item of every answer, and the queue is drained
        answers = [json.loads(recommend.handler(event, LambdaContext())["body"]) for _ in range(12)]
        clicks = [
            json.dumps({"user_id": "explorer", "item_id": a["items"][0]["item_id"], "event_type": "click",
                        "recommendation_id": a["recommendation_id"], "event_id": str(uuid.uuid4())})
            for a in answers
        ]  # fmt: skip
        send_messages(get_settings().require_queue(), clicks)
        worker.drain()
        # THEN each decision is stored with the probability explain showed, and a model learned all of them
        with connect() as conn:
            stored = dict(conn.execute("SELECT recommendation_id, probability FROM explorations").fetchall())
        shown = {
            a["recommendation_id"]: next(r for r in a["items"][0]["reasons"]["rules"] if r["rule"] == "explored")
            for a in answers
        }
        assert stored == pytest.approx({rec: rule["probability"] for rec, rule in shown.items()}, abs=1e-6)
        pointer, _ = read_vw_pointer(store)
        assert pointer is not None and pointer.examples == 12
        # AND the next decision is made by that model
        decision = json.loads(recommend.handler(event, LambdaContext())["body"])["recommendation_id"]
        worker.drain()
        with connect() as conn:
            used = conn.execute("SELECT model_version FROM explorations WHERE recommendation_id = %s", [decision])
            assert used.fetchone() == (pointer.version,)
    finally:
        store.delete_prefix("bandit/vw")
        forget_process_state()
