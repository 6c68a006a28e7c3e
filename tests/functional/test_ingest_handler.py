"""The ingest handler with events/ SQS batches against a real Postgres (the ``db`` fixture)."""

from __future__ import annotations

import copy
import json
import os
import uuid
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.bandit.arms import ArmStats, read_arms
from towerlight.config import get_settings
from towerlight.db.connection import close_shared_connection, shared_connection
from towerlight.event_fields import read_canonical
from towerlight.event_types import EVENT_TYPES
from towerlight.impressions import Impression, impression_message
from towerlight.ingest import MESSAGE_EVENT_NAMESPACE
from towerlight_offline.local.moto_server import free_port


@pytest.fixture
def ingest(db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/ingest/app.py, imported with Powertools configured for tests, on a fresh database."""
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    return fresh_handler("ingest")


def invoke(ingest: ModuleType, event: dict[str, Any]) -> list[str]:
    """Run the handler; returns the messageIds it reported failed (SQS redelivers those)."""
    response = ingest.handler(event, LambdaContext(function_name="ingest"))
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


T0 = datetime(2025, 1, 15, 9, 59, tzinfo=UTC)


def stored(db: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    """Every stored event by id: (user_id, item_id, event_type, value, ts, recommendation_id, context)."""
    columns = "event_id::text, user_id, item_id, event_type, value, ts, recommendation_id, context"
    rows = db.execute(f"SELECT {columns} FROM events").fetchall()
    db.rollback()
    return {row[0]: row[1:] for row in rows}


def bodies(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The message bodies that are JSON (a malformed one shows as {})."""
    parsed = []
    for record in event["Records"]:
        try:
            parsed.append(json.loads(record["body"]))
        except ValueError:
            parsed.append({})
    return parsed


def message_ids(event: dict[str, Any]) -> list[str]:
    return [record["messageId"] for record in event["Records"]]


def test_a_valid_batch_is_stored_whole(ingest: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN five valid events
    event = load_event("ingest_batch.json")
    # WHEN ingested
    failures = invoke(ingest, event)
    # THEN none failed and each is stored with every field
    assert failures == []
    rows = stored(db)
    assert set(rows) == {b["event_id"] for b in bodies(event)}
    click = rows["1c9e8d7f-0a1b-4c2d-8e3f-4a5b6c7d8e02"]
    assert click == (
        "u42",
        "i1001",
        "click",
        None,
        datetime(2025, 1, 15, 10, 0, 5, tzinfo=UTC),
        "rec-7f3a",
        {"page": "home", "position": 3},
    )
    assert rows["1c9e8d7f-0a1b-4c2d-8e3f-4a5b6c7d8e03"][3] == 19.99
    assert ingest.processor.stats.inserted == 5


def test_exactly_the_malformed_records_are_reported_and_the_rest_stored(
    ingest: ModuleType, db: psycopg.Connection
) -> None:
    # GIVEN a batch with two valid records, one non-JSON body, one unknown event type and one bad id
    event = load_event("ingest_mixed.json")
    ids = message_ids(event)
    # WHEN ingested
    failures = invoke(ingest, event)
    # THEN exactly the three malformed messages are reported, and the two valid events are stored
    assert failures == [ids[1], ids[2], ids[4]]
    assert set(stored(db)) == {bodies(event)[0]["event_id"], bodies(event)[3]["event_id"]}
    stats = ingest.processor.stats
    assert (stats.received, stats.rejected, stats.inserted) == (5, 3, 2)


def test_duplicate_deliveries_store_one_row_per_event_id(ingest: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN a batch carrying event A twice (a producer retry) and event B
    event = load_event("ingest_duplicates.json")
    # WHEN it is ingested, then delivered again whole (SQS at-least-once)
    first = invoke(ingest, event)
    first_stats = ingest.processor.stats
    second = invoke(ingest, event)
    # THEN nothing failed, two rows exist, and the repeats were counted as duplicates
    assert first == second == []
    assert len(stored(db)) == 2
    assert (first_stats.inserted, first_stats.duplicates) == (2, 1)
    assert (ingest.processor.stats.inserted, ingest.processor.stats.duplicates) == (0, 3)


def test_an_event_without_id_gets_one_derived_from_its_message(ingest: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN a message from another producer with no event_id
    event = load_event("ingest_batch.json")
    event["Records"] = event["Records"][:1]
    body = bodies(event)[0]
    del body["event_id"]
    event["Records"][0]["body"] = json.dumps(body)
    # WHEN it is delivered twice
    assert invoke(ingest, event) == invoke(ingest, event) == []
    # THEN one row exists, whose id derives from the SQS message id
    assert list(stored(db)) == [str(uuid.uuid5(MESSAGE_EVENT_NAMESPACE, message_ids(event)[0]))]


def test_metrics_count_received_rejected_inserted_and_duplicates(
    ingest: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the mixed batch  WHEN ingested
    invoke(ingest, load_event("ingest_mixed.json"))
    # THEN one EMF document carries the batch's counts
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    [counts] = [d for d in documents if "EventsReceived" in d]
    assert {k: counts[k] for k in ("EventsReceived", "EventsRejected", "EventsInserted", "EventsDuplicate")} == {
        "EventsReceived": [5.0],
        "EventsRejected": [3.0],
        "EventsInserted": [2.0],
        "EventsDuplicate": [0.0],
    }


def _point_database_at(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    close_shared_connection()


def test_a_database_outage_fails_the_whole_batch_and_the_retry_stores_it_once(
    ingest: ModuleType, db: psycopg.Connection, db_url: str
) -> None:
    # GIVEN the database is unreachable (nothing listens on the port)
    event = load_event("ingest_mixed.json")
    _point_database_at(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=2")
    try:
        # WHEN the batch is ingested
        failures = invoke(ingest, event)
        outage_stats = ingest.processor.stats
    finally:
        _point_database_at(db_url)
    # THEN every record is reported failed (valid ones too: SQS redelivers all) and nothing was written
    assert sorted(failures) == message_ids(event)
    assert (outage_stats.rejected, outage_stats.write_failed, outage_stats.inserted) == (3, 2, 0)
    assert stored(db) == {}
    # AND WHEN SQS redelivers the batch with the database back
    retry_failures = invoke(ingest, event)
    # THEN only the malformed records fail, and each valid event is stored exactly once
    assert retry_failures == [message_ids(event)[i] for i in (1, 2, 4)]
    assert len(stored(db)) == 2
    invoke(ingest, event)
    assert len(stored(db)) == 2


def test_a_connection_dropped_mid_flight_fails_the_batch_without_a_partial_write(
    ingest: ModuleType, db: psycopg.Connection
) -> None:
    # GIVEN a warm function whose connection the server has since killed (failover, idle reaper)
    assert invoke(ingest, load_event("ingest_duplicates.json")) == []
    warm_pid = shared_connection().info.backend_pid
    db.execute("SELECT pg_terminate_backend(%s)", [warm_pid])
    db.commit()
    event = load_event("ingest_batch.json")
    # WHEN the next batch arrives
    failures = invoke(ingest, event)
    # THEN every record is reported failed and none of its events was written
    assert sorted(failures) == message_ids(event)
    assert set(stored(db)).isdisjoint(b["event_id"] for b in bodies(event))
    # AND the redelivery reconnects and stores all five exactly once
    assert invoke(ingest, copy.deepcopy(event)) == []
    assert {b["event_id"] for b in bodies(event)} <= set(stored(db))
    assert len(stored(db)) == 2 + 5


def test_events_in_track_form_and_in_another_form_are_stored_alike(ingest: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN the same five events as track writes them (read directly) and as another producer might
    # write them (spaces, other key order: read by the model, through Powertools' per-record path)
    event = load_event("ingest_batch.json")
    other = copy.deepcopy(event)
    for record in other["Records"]:
        record["body"] = json.dumps(json.loads(record["body"]), indent=1, sort_keys=True)
    assert all(read_canonical(r["body"]) is not None for r in event["Records"])
    assert all(read_canonical(r["body"]) is None for r in other["Records"])
    # WHEN each form is ingested into an empty events table
    assert invoke(ingest, event) == []
    direct = stored(db)
    db.execute("TRUNCATE events")
    db.commit()
    assert invoke(ingest, other) == []
    # THEN the rows are the same
    assert stored(db) == direct
    assert len(direct) == 5


def impression_record(impression: Impression, message_id: str) -> dict[str, Any]:
    record = copy.deepcopy(load_event("ingest_batch.json")["Records"][0])
    record.update(messageId=message_id, body=impression_message(impression))
    return record


def test_a_batch_repeating_stored_events_stores_the_new_ones_and_counts_each_impression_once(
    ingest: ModuleType, db: psycopg.Connection
) -> None:
    # GIVEN a stored batch: an impression of i1001 and a view of it
    shown = Impression("rec-7f3a", "u42", "warm", "two_tower", "v1", ("i1001", "i2002"), 0.5, T0)
    first = load_event("ingest_batch.json")
    first["Records"] = [impression_record(shown, "m-imp"), first["Records"][0]]
    assert invoke(ingest, first) == []
    # WHEN a batch arrives with the impression and the view again (a redelivery) beside a new click on it
    second = load_event("ingest_batch.json")
    second["Records"] = [impression_record(shown, "m-imp"), second["Records"][0], second["Records"][1]]
    assert invoke(ingest, second) == []
    # THEN only the click is new; the impression counts once, credited with the click's reward once
    stats = ingest.processor.stats
    assert (stats.received, stats.inserted, stats.duplicates) == (3, 1, 2)
    assert len(stored(db)) == 2
    assert read_arms(db) == [ArmStats("warm", "two_tower", 1, 1, EVENT_TYPES["click"].reward)]
    db.rollback()
