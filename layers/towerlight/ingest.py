"""SQS → Postgres: validate every record, write the valid ones together, report the invalid ones.

Powertools' ``BatchProcessor`` calls a record handler once per record; ``EventBatchProcessor`` uses
that call only to validate (``record_handler`` returns the ``EventRow``), then writes all valid rows in
one transaction (COPY + ``INSERT ... ON CONFLICT DO NOTHING``) and builds the partial batch response:

- an invalid record is listed in ``batchItemFailures`` (SQS retries it, then moves it to the DLQ);
- a failed write lists every record, so SQS redelivers the whole batch and nothing was half-written;
- a redelivered or repeated ``event_id`` is stored once (counted as a duplicate).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from towerlight.db.connection import shared_connection
from towerlight.db.events import EventRow, insert_events
from towerlight.errors import ValidationError
from towerlight.event_fields import read_event_fields
from towerlight.exploration.records import record_explorations
from towerlight.impressions import (
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
# Events that arrive without an event_id get one derived from the SQS message id, so redeliveries of
# that message are still stored once.
MESSAGE_EVENT_NAMESPACE = uuid.UUID("3a4f7c1e-5b8d-4e2a-9c6f-0d1e2f3a4b5c")


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


def event_row(body: str, message_id: str) -> EventRow:
    """Validate one message body (an ``InteractionEvent`` as JSON) into the row to store.

    Raises ``InvalidRecordError`` with pydantic's reasons when the body is not a valid event.

    Example::

        >>> event_row('{"user_id": "u1", "item_id": "i9", "event_type": "click"}', "msg-1").event_id
        'c0f1...'  # derived from "msg-1": the same on every redelivery
    """
    try:
        fields = read_event_fields(body)
    except pydantic.ValidationError as exc:
        reasons = "; ".join(f"{p['location']}: {p['message']}" for p in validation_problems(exc))
        raise InvalidRecordError(f"message {message_id} is not a valid event: {reasons}") from None
    event_id = fields.event_id or str(uuid.uuid5(MESSAGE_EVENT_NAMESPACE, message_id))
    return EventRow(event_id, *fields[1:])


def record_handler(record: SQSRecord) -> EventRow | Impression:
    """The Powertools record handler: validation only (the processor writes the rows afterwards).

    Recommend's impressions share the queue with interaction events (``towerlight.impressions``).
    """
    if is_impression_message(record.body):
        try:
            return parse_impression_message(record.body)
        except InvalidImpressionError as exc:
            raise InvalidRecordError(f"message {record.message_id} is {exc.message}") from None
    return event_row(record.body, record.message_id)


def write_events(rows: Sequence[EventRow | Impression]) -> list[str]:
    """Insert ``rows`` in one transaction on the shared connection; returns the newly inserted ids.

    Impressions (ids: their recommendation_id) are stored and events credited to them in the same
    transaction (``record_feedback``), so the bandit counters move exactly when the rows are new; so are
    their item exploration decisions (``record_explorations``).

    Example::

        >>> write_events([row, row])
        ['5b0e7e0c-...']
    """
    conn = shared_connection()
    with conn.transaction():
        conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{INGEST_STATEMENT_TIMEOUT_MS}ms"])
        events = [row for row in rows if isinstance(row, EventRow)]
        inserted = insert_events(conn, events)
        attributed = {row.recommendation_id for row in events if row.recommendation_id}
        impressions = [row for row in rows if isinstance(row, Impression)]
        feedback = record_feedback(conn, impressions, attributed)
        record_explorations(conn, impressions)
        return inserted + list(feedback.impressions)


class EventBatchProcessor(BatchProcessor):
    """Powertools' SQS ``BatchProcessor`` that writes what ``record_handler`` validated, all at once.

    ``write`` stores rows and returns the ids it inserted (``write_events`` by default); any exception
    from it fails every record of the batch. ``stats`` describes the last batch and is published to
    ``metrics`` when given.

    Example::

        >>> processor = EventBatchProcessor(metrics=metrics)
        >>> process_partial_response(event=event, record_handler=record_handler, processor=processor)
        {'batchItemFailures': []}
    """

    def __init__(
        self,
        write: Callable[[Sequence[EventRow | Impression]], list[str]] = write_events,
        *,
        metrics: MetricsSink | None = None,
    ) -> None:
        # Not raising when every record failed: the response already lists them all for redelivery.
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._write = write
        self._metrics = metrics
        self.stats = IngestStats()

    def process(self) -> list[tuple[Any, ...]]:
        results = super().process()  # ("success", EventRow, raw record) | ("fail", reason, SQSRecord)
        valid = [(result, record) for status, result, record in results if status == "success"]
        self.stats = IngestStats(received=len(results), rejected=len(results) - len(valid))
        if self.stats.rejected:
            reasons = [str(info[1]) for info in self.exceptions[:10]]
            logger.warning("%d of %d records are invalid: %s", self.stats.rejected, len(results), reasons)
        if valid:
            results = self._write_valid(results, valid)
        if self._metrics is not None:
            self.stats.publish(self._metrics)
        return results

    def _write_valid(
        self, results: list[tuple[Any, ...]], valid: list[tuple[EventRow, dict[str, Any]]]
    ) -> list[tuple[Any, ...]]:
        rows = [row for row, _ in valid]
        try:
            inserted = self._write(rows)
        except Exception:
            logger.exception("writing %d events failed: every record is reported for redelivery", len(rows))
            self.stats.write_failed = len(rows)
            self.success_messages.clear()
            failed = [self.failure_handler(SQSRecord(record), sys.exc_info()) for _, record in valid]
            return [entry for entry in results if entry[0] != "success"] + failed
        self.stats.inserted = len(inserted)
        self.stats.duplicates = len(rows) - len(inserted)
        return results
