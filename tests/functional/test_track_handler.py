"""The track handler, called with events/ files through Mangum, against moto's real SQS endpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight import queue
from towerlight.config import get_settings
from towerlight.tracking import MAX_BODY_BYTES
from towerlight_offline.local.moto_server import ensure_queue


@pytest.fixture
def queue_url(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty queue that EVENTS_QUEUE_URL names for this test."""
    url = ensure_queue(f"track-{uuid.uuid4().hex[:12]}", max_receive_count=None)
    monkeypatch.setenv("EVENTS_QUEUE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def track(queue_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/track/app.py, imported with Powertools configured for tests."""
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    monkeypatch.setattr(queue, "BACKOFF_SECONDS", 0.0)
    return fresh_handler("track")


def invoke(track: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = track.handler(event, LambdaContext(function_name="track"))
    return response["statusCode"], json.loads(response["body"])


def queued(queue_url: str) -> list[dict[str, Any]]:
    """Every message now in the queue (received and deleted), as parsed JSON bodies."""
    sqs = queue.sqs_client()
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies += [json.loads(m["Body"]) for m in messages]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def emf_lines(output: str, metric: str) -> list[dict[str, Any]]:
    """The EMF documents printed in ``output`` that carry ``metric``."""
    documents = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    return [d for d in documents if metric in d]


def with_body(event: dict[str, Any], body: str) -> dict[str, Any]:
    return event | {"body": body}


def test_one_event_is_accepted_and_lands_in_the_queue(track: ModuleType, queue_url: str) -> None:
    # GIVEN a single event with its own event_id
    event = load_event("track_single.json")
    sent = json.loads(event["body"])
    # WHEN it is posted
    status, body = invoke(track, event)
    # THEN 202 with the client's id, and the queue holds exactly that event
    assert status == 202
    assert body == {"accepted": 1, "event_ids": [sent["event_id"]]}
    [message] = queued(queue_url)
    assert message == sent


def test_a_batch_is_accepted_in_order_with_ids_for_every_event(track: ModuleType, queue_url: str) -> None:
    # GIVEN five events, one with a client id and four without
    event = load_event("track_batch.json")
    sent = json.loads(event["body"])["events"]
    # WHEN posted
    status, body = invoke(track, event)
    # THEN 202 and one id per event, in request order: the client's kept, the others fresh UUIDs
    assert status == 202
    assert body["accepted"] == 5
    assert body["event_ids"][2] == sent[2]["event_id"]
    assert all(uuid.UUID(i).version == 7 for n, i in enumerate(body["event_ids"]) if n != 2)
    # AND each message is its event, with the id and a UTC timestamp filled in
    messages = {m["event_id"]: m for m in queued(queue_url)}
    assert set(messages) == set(body["event_ids"])
    for event_id, original in zip(body["event_ids"], sent, strict=True):
        assert messages[event_id]["item_id"] == original["item_id"]
        assert messages[event_id]["timestamp"].endswith("Z")
    assert messages[body["event_ids"][0]]["timestamp"] == "2025-01-15T10:00:00Z"  # from unix seconds


def test_invalid_events_are_refused_with_every_problem_and_nothing_is_queued(track: ModuleType, queue_url: str) -> None:
    # GIVEN a batch with one valid and two invalid events
    # WHEN posted
    status, body = invoke(track, load_event("track_invalid.json"))
    # THEN 422 with each problem located, and no event (not even the valid one) in the queue
    assert status == 422
    assert body["error"]["code"] == "invalid_request"
    locations = {d["location"] for d in body["error"]["details"]}
    assert locations == {
        "events.1.user_id",
        "events.1.event_type",
        "events.2.item_id",
        "events.2.timestamp",
        "events.2.value",
    }
    assert queued(queue_url) == []


def test_a_body_that_is_not_json_is_a_400(track: ModuleType, queue_url: str) -> None:
    # GIVEN a form-encoded body  WHEN posted  THEN 400 in the error contract, nothing queued
    status, body = invoke(track, load_event("track_not_json.json"))
    assert status == 400
    assert body["error"]["code"] == "malformed_request"
    assert queued(queue_url) == []


def test_more_than_100_events_is_a_413(track: ModuleType, queue_url: str) -> None:
    # GIVEN 101 events  WHEN posted  THEN 413, nothing queued
    status, body = invoke(track, load_event("track_too_many.json"))
    assert status == 413
    assert "at most 100 events" in body["error"]["message"]
    assert queued(queue_url) == []


def test_a_body_over_256_kb_is_a_413(track: ModuleType, queue_url: str) -> None:
    # GIVEN an otherwise valid event padded past the size limit
    padded = json.dumps({"user_id": "u1", "item_id": "i9", "event_type": "click"}) + " " * MAX_BODY_BYTES
    # WHEN posted  THEN 413
    status, body = invoke(track, with_body(load_event("track_single.json"), padded))
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


def test_health(track: ModuleType) -> None:
    # GIVEN the health event  WHEN invoked  THEN the function reports itself healthy
    status, body = invoke(track, load_event("health_track.json"))
    assert (status, body["status"], body["function"]) == (200, "ok", "track")


class FlakySQS:
    """The real (moto) client, except that SendMessageBatch fails the chosen entries ``times`` times."""

    def __init__(self, real: Any, failing_ids: set[str], times: int) -> None:
        self.real, self.failing_ids, self.remaining = real, failing_ids, dict.fromkeys(failing_ids, times)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)  # receive, delete, ...: the real thing

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        failing = [e for e in Entries if self.remaining.get(e["Id"], 0) > 0]
        passing = [e for e in Entries if e not in failing]
        for entry in failing:
            self.remaining[entry["Id"]] -= 1
        response = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=passing) if passing else {}
        failed = [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in failing]
        return {"Successful": response.get("Successful", []), "Failed": failed}


def test_entries_failing_once_are_retried_and_the_request_succeeds(
    track: ModuleType, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN SQS fails the 2nd and 4th entry of the batch on the first attempt
    flaky = FlakySQS(queue.sqs_client(), {"1", "3"}, times=1)
    monkeypatch.setattr(queue, "sqs_client", lambda: flaky)
    # WHEN the batch is posted
    status, body = invoke(track, load_event("track_batch.json"))
    # THEN 202, and each of the five events is in the queue exactly once
    assert status == 202
    assert sorted(m["event_id"] for m in queued(queue_url)) == sorted(body["event_ids"])


def test_entries_failing_every_retry_make_a_503_naming_exactly_them(
    track: ModuleType, queue_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN SQS keeps failing the 2nd and 4th entry
    flaky = FlakySQS(queue.sqs_client(), {"1", "3"}, times=100)
    monkeypatch.setattr(queue, "sqs_client", lambda: flaky)
    # WHEN the batch is posted
    status, body = invoke(track, load_event("track_batch.json"))
    # THEN 503: never a 202 for events that were not enqueued
    assert status == 503
    error = body["error"]
    assert error["code"] == "queue_unavailable"
    # AND the details name the failed events by position and id; the accepted ones are in the queue
    failed = error["details"]["failed"]
    assert [f["index"] for f in failed] == [1, 3]
    in_queue = {m["event_id"] for m in queued(queue_url)}
    assert in_queue == set(error["details"]["accepted"])
    assert len(in_queue) == 3 and not in_queue & {f["event_id"] for f in failed}
    # AND the metrics count 3 accepted, 2 not enqueued
    [metrics] = emf_lines(capsys.readouterr().out, "EventsNotEnqueued")
    assert (metrics["EventsAccepted"], metrics["EventsNotEnqueued"]) == ([3.0], [2.0])


def test_accepted_and_rejected_events_are_counted_in_emf_metrics(
    track: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN one accepted batch and one refused batch
    invoke(track, load_event("track_batch.json"))
    accepted = capsys.readouterr().out
    invoke(track, load_event("track_invalid.json"))
    rejected = capsys.readouterr().out
    # WHEN the EMF lines are read  THEN they count the events, in the configured namespace
    [accepted_metrics] = emf_lines(accepted, "EventsAccepted")
    [rejected_metrics] = emf_lines(rejected, "EventsRejected")
    assert accepted_metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TowerlightTest"
    assert accepted_metrics["EventsAccepted"] == [5.0]
    assert rejected_metrics["EventsRejected"] == [3.0]
    assert "EventsAccepted" not in rejected_metrics
