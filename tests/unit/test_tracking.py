"""The event contract, request-body checks and the SQS batch sender (an in-memory fake SQS, no network)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
from botocore.exceptions import ReadTimeoutError

from towerlight import queue
from towerlight.config import get_settings
from towerlight.errors import (
    ConfigurationError,
    MalformedRequestError,
    PayloadTooLargeError,
    QueueError,
    ValidationError,
)
from towerlight.queue import send_messages
from towerlight.tracking import (
    MAX_BODY_BYTES,
    MAX_CONTEXT_BYTES,
    InteractionEvent,
    TrackBody,
    decode_track_body,
    enqueue_events,
    validate_events,
)

CLICK = {"user_id": "u1", "item_id": "i9", "event_type": "click"}


def _event(**fields: Any) -> InteractionEvent:
    return InteractionEvent.model_validate(CLICK | fields)


def _problems(raw: Any, *, batch: bool = False) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        validate_events(TrackBody(events=raw if batch else [raw], batch=batch))
    return caught.value.details


class FakeSQS:
    """SendMessageBatch in memory; ``fail(entry_id, attempt)`` returns a Failed entry, raises, or None."""

    def __init__(self, fail: Callable[[str, str, int], dict[str, Any] | None] | None = None) -> None:
        self.fail = fail or (lambda body, entry_id, attempt: None)
        self.calls: list[list[dict[str, str]]] = []
        self.queue: list[str] = []
        self.attempts: dict[str, int] = {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.calls.append(Entries)
        assert len(Entries) <= 10 and len({e["Id"] for e in Entries}) == len(Entries)
        response: dict[str, list[dict[str, Any]]] = {"Successful": [], "Failed": []}
        for entry in Entries:
            attempt = self.attempts[entry["MessageBody"]] = self.attempts.get(entry["MessageBody"], 0) + 1
            failure = self.fail(entry["MessageBody"], entry["Id"], attempt)
            if failure is None:
                self.queue.append(entry["MessageBody"])
                response["Successful"].append({"Id": entry["Id"], "MessageId": str(uuid.uuid4())})
            else:
                response["Failed"].append({"Id": entry["Id"], **failure})
        return response


THROTTLED = {"Code": "ThrottlingException", "Message": "slow down", "SenderFault": False}


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "BACKOFF_SECONDS", 0.0)


# --- the event model -------------------------------------------------------------------------------


def test_absent_event_id_and_timestamp_are_filled_in() -> None:
    # GIVEN an event with only the required fields
    before = datetime.now(UTC)
    # WHEN it is validated
    event = _event()
    # THEN it gets a fresh time-ordered UUID (v7, RFC 9562) and the current UTC time
    made = uuid.UUID(event.event_id)
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= event.timestamp <= datetime.now(UTC)
    assert _event().event_id != event.event_id


def test_client_event_id_is_kept_in_canonical_form() -> None:
    # GIVEN a client id in upper case (as Swift's UUID().uuidString writes it)
    client_id = "6F1D2C3B-4A59-4E7F-8A1B-2C3D4E5F6A7B"
    # WHEN validated  THEN the same UUID is kept, lower-cased so retries match byte for byte
    assert _event(event_id=client_id).event_id == client_id.lower()


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1736935200, datetime(2025, 1, 15, 10, 0, tzinfo=UTC)),
        (1736935200.5, datetime(2025, 1, 15, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2025-01-15T10:00:00Z", datetime(2025, 1, 15, 10, 0, tzinfo=UTC)),
        ("2025-01-15T12:00:00+02:00", datetime(2025, 1, 15, 10, 0, tzinfo=UTC)),
        ("2025-01-15T10:00:00", datetime(2025, 1, 15, 10, 0, tzinfo=UTC)),
    ],
)
def test_timestamp_accepts_iso_8601_and_unix_seconds(timestamp: Any, expected: datetime) -> None:
    # GIVEN a timestamp in one of the accepted forms  WHEN validated
    event = _event(timestamp=timestamp)
    # THEN it is that instant, in UTC
    assert event.timestamp == expected
    assert event.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "timestamp",
    [
        (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        4_102_444_800,  # 2100-01-01
        "1969-12-31T23:59:59Z",
        "yesterday",
        True,
    ],
)
def test_absurd_or_unreadable_timestamps_are_rejected(timestamp: Any) -> None:
    # GIVEN a time in the future, before 1970, or not a time  WHEN validated
    problems = _problems(CLICK | {"timestamp": timestamp})
    # THEN the timestamp is named as the problem
    assert [p["location"] for p in problems] == ["timestamp"]


def test_a_small_clock_skew_is_tolerated() -> None:
    # GIVEN a client clock one minute ahead  WHEN validated  THEN accepted
    ahead = datetime.now(UTC) + timedelta(minutes=1)
    assert _event(timestamp=ahead.isoformat()).timestamp == ahead


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "u" * 129}, "user_id"),
        ({"item_id": " i9"}, "item_id"),
        ({"item_id": "i\x009"}, "item_id"),
        ({"event_type": "teleport"}, "event_type"),
        ({"value": "a lot"}, "value"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"recommendation_id": ""}, "recommendation_id"),
        ({"context": ["not", "an", "object"]}, "context"),
        ({"context": {"note": "x" * MAX_CONTEXT_BYTES}}, "context"),
        ({"context": {"note": "nul\x00"}}, "context"),
        ({"context": {"ratio": float("nan")}}, "context"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_fields_are_reported_by_name(fields: dict[str, Any], location: str) -> None:
    # GIVEN an event with one bad field  WHEN validated  THEN exactly that field is reported
    assert [p["location"] for p in _problems(CLICK | fields)] == [location]


def test_missing_required_fields_are_each_reported() -> None:
    # GIVEN an empty object  WHEN validated  THEN the three required fields are named
    locations = {p["location"] for p in _problems({})}
    assert locations == {"user_id", "item_id", "event_type"}


def test_event_id_problem_says_a_uuid_is_expected() -> None:
    # GIVEN a malformed id  WHEN validated  THEN the message explains the expected form
    assert _problems(CLICK | {"event_id": "42"})[0]["message"].startswith("must be a UUID")


def test_numeric_ids_are_read_as_strings() -> None:
    # GIVEN ids sent as JSON numbers (MovieLens style)  WHEN validated  THEN they are strings
    event = _event(user_id=196, item_id=242)
    assert (event.user_id, event.item_id) == ("196", "242")


def test_every_event_type_of_the_shared_table_is_accepted() -> None:
    # GIVEN each declared event type  WHEN validated  THEN accepted
    from towerlight.event_types import EVENT_TYPES

    assert [_event(event_type=name).event_type for name in EVENT_TYPES] == list(EVENT_TYPES)


def test_the_sqs_message_round_trips_to_the_same_event() -> None:
    # GIVEN a full event
    event = _event(value=4.5, recommendation_id="r1", context={"page": "home", "position": 3})
    # WHEN serialized for SQS and read back as ingest reads it
    message = event.to_message()
    # THEN nothing changed, and absent fields are left out of the message
    assert InteractionEvent.model_validate_json(message) == event
    assert "value" not in json.loads(_event().to_message())


# --- request bodies --------------------------------------------------------------------------------


def test_a_single_event_body_is_one_event() -> None:
    # GIVEN one event as the body  WHEN decoded  THEN it is a one-event, non-batch body
    assert decode_track_body(json.dumps(CLICK).encode()) == TrackBody(events=[CLICK], batch=False)


def test_a_batch_body_keeps_the_order() -> None:
    # GIVEN {"events": [...]}  WHEN decoded and validated  THEN the events come back in order
    raw = [CLICK | {"item_id": f"i{n}"} for n in range(3)]
    events = validate_events(decode_track_body(json.dumps({"events": raw}).encode()))
    assert [e.item_id for e in events] == ["i0", "i1", "i2"]


@pytest.mark.parametrize("body", [b"", b"user_id=u1", b'{"user_id": "u1",', b'{"value": NaN}', b"\xff\xfe"])
def test_a_body_that_is_not_json_is_malformed(body: bytes) -> None:
    # GIVEN a body that is not (standard) JSON  WHEN decoded  THEN 400-class error
    with pytest.raises(MalformedRequestError):
        decode_track_body(body)


def test_a_lone_surrogate_is_refused_before_it_reaches_postgres() -> None:
    # GIVEN JSON whose string holds an unpaired surrogate (Postgres cannot store it)
    body = b'{"user_id": "u\\ud800", "item_id": "i9", "event_type": "click"}'
    # WHEN decoded  THEN refused as malformed
    with pytest.raises(MalformedRequestError):
        decode_track_body(body)


@pytest.mark.parametrize("body", [b"[]", b'"click"', b"42", b'{"events": []}', b'{"events": {}}'])
def test_json_of_the_wrong_shape_is_invalid(body: bytes) -> None:
    # GIVEN JSON that is neither an event object nor a non-empty batch  WHEN decoded  THEN 422-class error
    with pytest.raises(ValidationError):
        decode_track_body(body)


def test_a_batch_with_other_top_level_fields_is_invalid() -> None:
    # GIVEN a batch with a stray field  WHEN decoded  THEN the field is named
    with pytest.raises(ValidationError) as caught:
        decode_track_body(json.dumps({"events": [CLICK], "user": "u1"}).encode())
    assert caught.value.details == [{"location": "user", "message": "unexpected field"}]


def test_more_than_100_events_is_too_large() -> None:
    # GIVEN 101 events  WHEN decoded  THEN 413-class error naming the limit
    with pytest.raises(PayloadTooLargeError, match="at most 100 events, got 101"):
        decode_track_body(json.dumps({"events": [CLICK] * 101}).encode())


def test_100_events_is_accepted() -> None:
    # GIVEN exactly 100 events  WHEN decoded  THEN all are there
    assert len(decode_track_body(json.dumps({"events": [CLICK] * 100}).encode()).events) == 100


def test_a_body_over_256_kb_is_too_large_before_parsing() -> None:
    # GIVEN a body one byte over the limit (not even JSON)  WHEN decoded  THEN 413, not 400
    with pytest.raises(PayloadTooLargeError):
        decode_track_body(b"x" * (MAX_BODY_BYTES + 1))


def test_batch_problems_are_located_by_position_and_nothing_is_accepted() -> None:
    # GIVEN a batch whose second and third events are invalid
    raw = [CLICK, CLICK | {"user_id": ""}, CLICK | {"event_type": "nope", "value": "x"}]
    # WHEN validated
    problems = _problems(raw, batch=True)
    # THEN each problem carries its event's position
    assert [p["location"] for p in problems] == ["events.1.user_id", "events.2.event_type", "events.2.value"]


# --- sending to SQS --------------------------------------------------------------------------------


def test_messages_go_out_in_batches_of_at_most_ten() -> None:
    # GIVEN 25 messages
    sqs = FakeSQS()
    bodies = [f"m{n}" for n in range(25)]
    # WHEN sent
    result = send_messages("q", bodies, client=sqs)
    # THEN three calls of 10, 10 and 5 carried them all, and every position is reported sent
    assert sorted(len(call) for call in sqs.calls) == [5, 10, 10]
    assert sorted(sqs.queue) == sorted(bodies)
    assert result.sent == list(range(25))
    assert result.failed == []


def test_entries_that_failed_are_retried_until_they_succeed() -> None:
    # GIVEN SQS throttles two entries on their first attempt
    sqs = FakeSQS(lambda body, _id, attempt: THROTTLED if body in ("m1", "m3") and attempt == 1 else None)
    # WHEN five messages are sent
    result = send_messages("q", [f"m{n}" for n in range(5)], client=sqs)
    # THEN the second call carried only the two failed entries, and all five arrived once
    assert [len(call) for call in sqs.calls] == [5, 2]
    assert sorted(sqs.queue) == [f"m{n}" for n in range(5)]
    assert result.failed == []


def test_entries_still_failing_after_every_attempt_are_reported_by_position() -> None:
    # GIVEN SQS keeps failing one entry
    sqs = FakeSQS(lambda body, _id, _attempt: THROTTLED if body == "m2" else None)
    # WHEN sent with three attempts
    result = send_messages("q", ["m0", "m1", "m2", "m3"], client=sqs, attempts=3)
    # THEN it was tried three times and is the only one reported, with SQS's reason
    assert sqs.attempts["m2"] == 3
    assert result.sent == [0, 1, 3]
    assert [(f.index, f.code) for f in result.failed] == [(2, "ThrottlingException")]


def test_sender_faults_are_not_retried() -> None:
    # GIVEN SQS rejects an entry as the sender's fault (resending cannot help)
    invalid = {"Code": "InvalidMessageContents", "Message": "bad", "SenderFault": True}
    sqs = FakeSQS(lambda body, _id, _attempt: invalid if body == "m0" else None)
    # WHEN sent
    result = send_messages("q", ["m0", "m1"], client=sqs)
    # THEN it was tried once and reported failed
    assert sqs.attempts["m0"] == 1
    assert [f.code for f in result.failed] == ["InvalidMessageContents"]


@pytest.mark.parametrize(
    "error",
    [ConnectionError("connection reset"), ReadTimeoutError(endpoint_url="http://127.0.0.1:5000/")],
    ids=["dropped-connection", "botocore-read-timeout"],  # the latter has a `response` attribute set to None
)
def test_a_call_that_raises_is_retried_for_its_whole_chunk(error: Exception) -> None:
    # GIVEN the first SendMessageBatch call fails outright
    sqs = FakeSQS()
    real = sqs.send_message_batch
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return real(**kwargs)

    sqs.send_message_batch = flaky  # type: ignore[method-assign]
    # WHEN three messages are sent  THEN the retry delivered all of them
    assert send_messages("q", ["a", "b", "c"], client=sqs).sent == [0, 1, 2]
    assert sorted(sqs.queue) == ["a", "b", "c"]


def test_a_chunk_whose_calls_always_raise_is_reported_failed() -> None:
    # GIVEN SQS is unreachable
    class Down:
        def send_message_batch(self, **_: Any) -> dict[str, Any]:
            raise ConnectionError("no route to host")

    # WHEN sent  THEN every message is reported failed with the error
    result = send_messages("q", ["a", "b"], client=Down(), attempts=2)
    assert result.sent == []
    assert [(f.index, f.code) for f in result.failed] == [(0, "ConnectionError"), (1, "ConnectionError")]


def test_enqueue_returns_the_ids_in_request_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a working queue and twelve events (two chunks)
    sqs = FakeSQS()
    monkeypatch.setattr(queue, "sqs_client", lambda: sqs)
    events = [_event(item_id=f"i{n}") for n in range(12)]
    # WHEN enqueued
    ids = enqueue_events(events, queue_url="q")
    # THEN the ids are the events' ids, in order, and each message is the event's JSON
    assert ids == [e.event_id for e in events]
    assert sorted(json.loads(m)["event_id"] for m in sqs.queue) == sorted(ids)


def test_enqueue_names_exactly_the_events_that_were_not_enqueued(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN SQS keeps failing the 2nd and 4th event
    events = [_event(item_id=f"i{n}") for n in range(5)]
    doomed = {events[1].to_message(), events[3].to_message()}
    sqs = FakeSQS(lambda body, _id, _attempt: THROTTLED if body in doomed else None)
    monkeypatch.setattr(queue, "sqs_client", lambda: sqs)
    # WHEN enqueued
    with pytest.raises(QueueError) as caught:
        enqueue_events(events, queue_url="q")
    # THEN the error (a 503) lists the accepted ids and the failed ones with position and reason
    details = caught.value.details
    assert details["accepted"] == [events[i].event_id for i in (0, 2, 4)]
    assert [(f["index"], f["event_id"]) for f in details["failed"]] == [
        (1, events[1].event_id),
        (3, events[3].event_id),
    ]
    assert details["failed"][0]["reason"].startswith("ThrottlingException")


def test_enqueue_without_a_queue_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no EVENTS_QUEUE_URL
    monkeypatch.delenv("EVENTS_QUEUE_URL", raising=False)
    get_settings.cache_clear()
    # WHEN enqueueing  THEN the missing variable is named
    try:
        with pytest.raises(ConfigurationError, match="EVENTS_QUEUE_URL"):
            enqueue_events([_event()])
    finally:
        get_settings.cache_clear()


def test_pydantic_errors_never_leak_from_validate_events() -> None:
    # GIVEN garbage inside a batch  WHEN validated  THEN only the domain error is raised
    with pytest.raises(ValidationError) as caught:
        validate_events(TrackBody(events=[None, 42, "x"], batch=True))
    assert not isinstance(caught.value, pydantic.ValidationError)
    assert {p["location"] for p in caught.value.details} == {
        "events.0.(event)",
        "events.1.(event)",
        "events.2.(event)",
    }
