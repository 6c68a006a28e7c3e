"""SQS → Postgres: validate every record, write the valid ones together, report the invalid ones.

One batch goes through two steps, each a function:

1. read (``EventBatchProcessor.process``, one loop over the records; ``record_handler`` for any message
   not in track's canonical event form): each message becomes an event's COPY record or an
   ``Impression``; an invalid one is listed in ``batchItemFailures`` (SQS retries it, then moves it to
   the DLQ). The valid ones form an ``IngestBatch``.
2. write (``write_events``), one transaction: ``store_events`` (COPY, or ``INSERT ... ON CONFLICT DO
   NOTHING`` when the batch repeats stored events), then ``record_feedback`` (impressions, rewards,
   bandit counters). A failed write lists every record, so SQS redelivers the whole batch and
   nothing was half-written; a redelivered or repeated ``event_id`` is stored once (a duplicate).

Example::

    >>> processor = EventBatchProcessor()
    >>> process_partial_response(event=sqs_event, record_handler=record_handler, processor=processor)
    {'batchItemFailures': [{'itemIdentifier': '059f36b4-87a3-44ab-83d2-661975830a7d'}]}
    >>> processor.stats
    IngestStats(received=3, rejected=1, inserted=2, duplicates=0, write_failed=0)
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pydantic
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from towerlight.db.connection import shared_connection
from towerlight.db.events import EventRecord, copy_events, event_record, insert_new_events
from towerlight.errors import ValidationError
from towerlight.event_fields import read_canonical, read_event_fields
from towerlight.exploration.records import record_explorations
from towerlight.impressions import (
    FeedbackResult,
    Impression,
    InvalidImpressionError,
    is_impression_message,
    parse_impression_message,
    record_feedback,
)
from towerlight.tracking import MetricsSink, validation_problems

logger = logging.getLogger(__name__)

# A batch of thousands of rows may take longer than the serving default (TOWERLIGHT_DB_TIMEOUT_MS).
# Set per transaction: a different timeout_ms would make shared_connection() open another connection.
INGEST_STATEMENT_TIMEOUT_MS = 30_000
_SET_TIMEOUT = f"SET LOCAL statement_timeout = {INGEST_STATEMENT_TIMEOUT_MS}".encode()
# Events that arrive without an event_id get one derived from the SQS message id, so redeliveries of
# that message are still stored once.
MESSAGE_EVENT_NAMESPACE = uuid.UUID("3a4f7c1e-5b8d-4e2a-9c6f-0d1e2f3a4b5c")

# Writes a batch's events (distinct ids) and returns how many were new: copy_events or store_new_events.
StoreEvents = Callable[[psycopg.Connection, Collection[EventRecord]], int]


class InvalidRecordError(ValidationError):
    """An SQS message that is not a valid interaction event; it fails alone, the batch goes on."""

    code = "invalid_record"


@dataclass
class IngestStats:
    """What happened to one batch; ``write_failed`` counts valid records failed by a database error."""

    received: int = 0
    rejected: int = 0
    inserted: int = 0
    duplicates: int = 0
    write_failed: int = 0

    def publish(self, metrics: MetricsSink) -> None:
        """Add the counts as EMF metrics (EventsReceived, EventsRejected, EventsInserted, ...)."""
        for name, value in (
            ("EventsReceived", self.received),
            ("EventsRejected", self.rejected),
            ("EventsInserted", self.inserted),
            ("EventsDuplicate", self.duplicates),
            ("EventsWriteFailed", self.write_failed),
        ):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@dataclass
class IngestBatch:
    """The valid messages of one SQS batch, as ``write_events`` takes them.

    ``events`` holds the first record of each event id (keyed by the uuid's bytes); ``messages`` counts
    every valid message, repeats included, so ``messages`` minus what was stored are duplicates.
    """

    events: dict[bytes, EventRecord] = field(default_factory=dict)
    impressions: list[Impression] = field(default_factory=list)
    messages: int = 0

    def add(self, message: EventRecord | Impression) -> None:
        self.messages += 1
        if isinstance(message, Impression):
            self.impressions.append(message)
        else:
            self.events.setdefault(message[0], message)

    def recommendation_ids(self) -> set[str]:
        """The recommendation ids the batch's events carry (their impressions may earn a reward)."""
        return {record[6] for record in self.events.values() if record[6] is not None}


def read_event(body: str, message_id: str) -> EventRecord:
    """Validate one message body (an ``InteractionEvent`` as JSON) into the record to store.

    Raises ``InvalidRecordError`` with pydantic's reasons when the body is not a valid event.

    Example::

        >>> read_event('{"user_id": "u1", "item_id": "i9", "event_type": "click"}', "msg-1")[0]
        b'\\xc0\\xf1...'  # the uuid derived from "msg-1": the same on every redelivery
    """
    try:
        fields = read_event_fields(body)
    except pydantic.ValidationError as exc:
        reasons = "; ".join(f"{p['location']}: {p['message']}" for p in validation_problems(exc))
        raise InvalidRecordError(f"message {message_id} is not a valid event: {reasons}") from None
    return event_record(fields.event_id or message_event_id(message_id), *fields[1:])


def message_event_id(message_id: str) -> str:
    """The event id of a message that has none: derived from the SQS message id, the same on redelivery."""
    return str(uuid.uuid5(MESSAGE_EVENT_NAMESPACE, message_id))


def record_handler(record: SQSRecord) -> EventRecord | Impression:
    """The Powertools record handler: validation only (the processor writes the batch afterwards).

    Recommend's impressions share the queue with interaction events (``towerlight.impressions``).
    """
    body = record.body
    if is_impression_message(body):
        try:
            return parse_impression_message(body)
        except InvalidImpressionError as exc:
            raise InvalidRecordError(f"message {record.message_id} is {exc.message}") from None
    return read_event(body, record.message_id)


def write_events(batch: IngestBatch) -> int:
    """Write ``batch`` in one transaction on the shared connection; returns how many messages were new.

    New events (the usual case) are COPYed straight into ``events``. When that meets a stored event (a
    redelivery, or a concurrent consumer's write), the transaction is rolled back and written again
    with ``ON CONFLICT DO NOTHING``: retrying the whole transaction, rather than a savepoint around the
    COPY, saves the usual batch two round trips (it is BEGIN, SET LOCAL, COPY, the feedback's
    statements, COMMIT). Impressions are stored and events credited to them in the same transaction
    (``credit_feedback``), so the bandit counters move exactly when the rows are new; so are their
    item exploration decisions (``record_explorations``).

    Example::

        >>> write_events(batch)  # 999 new events and an impression; one event sent twice
        1000
    """
    conn = shared_connection()
    try:
        return _write(conn, batch, copy_events)
    except psycopg.errors.UniqueViolation:
        logger.info("%d events include stored ones: inserting only the new ones", len(batch.events))
    return _write(conn, batch, store_new_events)


def store_new_events(conn: psycopg.Connection, records: Collection[EventRecord]) -> int:
    """Insert the events of ``records`` not stored yet; returns how many (the redelivery path)."""
    return len(insert_new_events(conn, records))


def _write(conn: psycopg.Connection, batch: IngestBatch, store_events: StoreEvents) -> int:
    with conn.transaction():
        conn.execute(_SET_TIMEOUT)
        inserted = store_events(conn, batch.events.values())
        feedback = credit_feedback(conn, batch)
        record_explorations(conn, batch.impressions)
    return inserted + len(feedback.impressions)


def credit_feedback(conn: psycopg.Connection, batch: IngestBatch) -> FeedbackResult:
    """Store the batch's impressions and credit its events' rewards to them (in the caller's transaction).

    Runs after the events are written, so the bandit counters move exactly when the rows are new.
    """
    return record_feedback(conn, batch.impressions, batch.recommendation_ids())


class EventBatchProcessor(BatchProcessor):
    """Powertools' SQS ``BatchProcessor`` that writes what ``record_handler`` validated, all at once.

    ``write`` stores a batch and returns how many of its messages were new (``write_events`` by
    default); any exception from it fails every record of the batch. ``stats`` describes the last batch
    and is published to ``metrics`` when given.

    Example::

        >>> processor = EventBatchProcessor(metrics=metrics)
        >>> process_partial_response(event=event, record_handler=record_handler, processor=processor)
        {'batchItemFailures': []}
    """

    def __init__(
        self,
        write: Callable[[IngestBatch], int] = write_events,
        *,
        metrics: MetricsSink | None = None,
    ) -> None:
        # Not raising when every record failed: the response already lists them all for redelivery.
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._write = write
        self._metrics = metrics
        self.stats = IngestStats()

    def process(self) -> list[tuple[Any, ...]]:
        results, batch, valid = self._read()
        self.stats = IngestStats(received=len(results), rejected=len(results) - len(valid))
        if self.stats.rejected:
            reasons = [str(info[1]) for info in self.exceptions[:10]]
            logger.warning("%d of %d records are invalid: %s", self.stats.rejected, len(results), reasons)
        if valid:
            results = self._write_valid(results, batch, valid)
        if self._metrics is not None:
            self.stats.publish(self._metrics)
        return results

    def _read(self) -> tuple[list[tuple[Any, ...]], IngestBatch, list[dict[str, Any]]]:
        """Every record read into the batch, in one loop; the results are Powertools' own.

        Events in track's canonical form (nearly all) are read here directly: Powertools' per-record
        path costs more than reading such an event. Anything else (an impression, an event in another
        form, an invalid message) goes through that path, to ``record_handler``, which reads it in full.
        """
        results: list[tuple[Any, ...]] = []
        batch = IngestBatch()
        valid: list[dict[str, Any]] = []
        now = datetime.now(UTC)
        for raw in self.records:
            fields = read_canonical(raw["body"], now)
            if fields is None:
                result = self._process_record(raw)  # ("success", message, raw) | ("fail", reason, SQSRecord)
                if result[0] == "success":
                    batch.add(result[1])
                    valid.append(raw)
                results.append(result)
                continue
            event_id = fields.event_id or message_event_id(raw["messageId"])
            message = event_record(event_id, *fields[1:])
            batch.add(message)
            valid.append(raw)
            results.append(self.success_handler(raw, message))
        return results, batch, valid

    def _write_valid(
        self, results: list[tuple[Any, ...]], batch: IngestBatch, valid: list[dict[str, Any]]
    ) -> list[tuple[Any, ...]]:
        try:
            inserted = self._write(batch)
        except Exception:
            logger.exception("writing %d records failed: every record is reported for redelivery", len(valid))
            self.stats.write_failed = len(valid)
            self.success_messages.clear()
            failed = [self.failure_handler(SQSRecord(raw), sys.exc_info()) for raw in valid]
            return [entry for entry in results if entry[0] != "success"] + failed
        self.stats.inserted = inserted
        self.stats.duplicates = batch.messages - inserted
        return results
