"""The whole write path: track handler → SQS (moto's server) → local worker → ingest handler → Postgres."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import ModuleType

import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.bandit.arms import ArmStats, read_arms
from towerlight.config import get_settings
from towerlight.event_types import EVENT_TYPES
from towerlight.impressions import Impression, send_impressions
from towerlight.queue import sqs_client
from towerlight_offline.local.moto_server import ensure_queue
from towerlight_offline.local.worker import DrainResult, QueueWorker, load_function_handler

pytestmark = pytest.mark.integration


@pytest.fixture
def queue_url(moto_endpoint: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh queue named by EVENTS_QUEUE_URL, on a fresh database, with Powertools set for tests."""
    url = ensure_queue(f"e2e-{uuid.uuid4().hex[:12]}", max_receive_count=None)
    monkeypatch.setenv("EVENTS_QUEUE_URL", url)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    get_settings.cache_clear()
    return url


@pytest.fixture
def track(queue_url: str) -> ModuleType:
    return fresh_handler("track")


@pytest.fixture
def worker(queue_url: str) -> QueueWorker:
    return QueueWorker(queue_url, load_function_handler("Ingest"), wait_seconds=0)


def stored_ids(db: psycopg.Connection) -> list[str]:
    ids = [row[0] for row in db.execute("SELECT event_id::text FROM events ORDER BY event_id")]
    db.rollback()
    return ids


def queue_depth(queue_url: str) -> int:
    attributes = sqs_client().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_tracked_events_reach_postgres_once_and_leave_the_queue(
    track: ModuleType, worker: QueueWorker, db: psycopg.Connection, queue_url: str
) -> None:
    # GIVEN a batch of five events accepted by the track function
    response = track.handler(load_event("track_batch.json"), LambdaContext(function_name="track"))
    assert response["statusCode"] == 202
    event_ids = json.loads(response["body"])["event_ids"]
    # WHEN the worker drains the queue into the ingest function
    result = worker.drain()
    # THEN every event is stored under the id the client was given, and the queue is empty
    assert result == DrainResult(received=5, deleted=5, failed=0)
    assert stored_ids(db) == sorted(event_ids)
    assert queue_depth(queue_url) == 0


def test_a_client_retry_of_the_same_events_is_stored_once(
    track: ModuleType, worker: QueueWorker, db: psycopg.Connection
) -> None:
    # GIVEN a client that sends the same event (same event_id) twice, e.g. after a timeout
    event = load_event("track_single.json")
    for _ in range(2):
        assert track.handler(event, LambdaContext(function_name="track"))["statusCode"] == 202
    # WHEN both messages are ingested
    result = worker.drain()
    # THEN both were processed and deleted, and one row exists
    assert (result.received, result.deleted) == (2, 2)
    assert stored_ids(db) == [json.loads(event["body"])["event_id"]]


def test_a_malformed_message_stays_in_the_queue_and_the_rest_is_stored(
    track: ModuleType, worker: QueueWorker, db: psycopg.Connection, queue_url: str
) -> None:
    # GIVEN a valid tracked event and a malformed message from some other producer
    response = track.handler(load_event("track_single.json"), LambdaContext(function_name="track"))
    sqs_client().send_message(QueueUrl=queue_url, MessageBody="{not json")
    # WHEN the worker drains the queue once
    result = worker.drain_once()
    # THEN only the malformed one is left (for SQS to retry, then dead-letter); the event is stored
    assert result == DrainResult(received=2, deleted=1, failed=1)
    assert stored_ids(db) == json.loads(response["body"])["event_ids"]
    assert queue_depth(queue_url) == 1


def test_impressions_share_the_queue_and_clicks_are_credited_to_them_once(
    track: ModuleType, worker: QueueWorker, db: psycopg.Connection, queue_url: str
) -> None:
    # GIVEN the impression recommend logged for rec-7f3a (sent twice), a malformed impression, and the
    # click on one of its items that the client tracked with that recommendation_id
    shown = Impression("rec-7f3a", "u42", "warm", "two_tower", "v1", ("i1000", "i1001"), 0.9, datetime.now(UTC))
    assert send_impressions(queue_url, [shown, shown]) == 0
    sqs_client().send_message(QueueUrl=queue_url, MessageBody='{"impression":{"recommendation_id":"x"}}')
    assert track.handler(load_event("track_single.json"), LambdaContext(function_name="track"))["statusCode"] == 202
    # WHEN the worker drains the queue once
    result = worker.drain_once()
    # THEN only the malformed impression is left; the arm counts one impression rewarded with one click
    assert result == DrainResult(received=4, deleted=3, failed=1)
    reward = EVENT_TYPES["click"].reward
    assert read_arms(db) == [ArmStats("warm", "two_tower", impressions=1, successes=1, reward_sum=reward)]
    db.rollback()
