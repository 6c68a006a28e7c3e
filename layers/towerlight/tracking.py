"""Interaction events at the edge: the event model, request-body validation and enqueueing to SQS.

``POST /events`` takes one event or ``{"events": [...]}``. Every event is validated before any is
enqueued (a request is accepted or refused as a whole), then sent as one SQS message each: its
canonical JSON with ``event_id`` and ``timestamp`` filled in, so a redelivery or a client retry with the
same ``event_id`` is stored once.

Example::

    >>> body = decode_track_body(b'{"user_id": "u1", "item_id": "i9", "event_type": "click"}')
    >>> events = validate_events(body)
    >>> enqueue_events(events)
    ['3f1c0b8e-...']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

import pydantic
import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from towerlight.config import get_settings
from towerlight.errors import MalformedRequestError, PayloadTooLargeError, QueueError, ValidationError
from towerlight.event_types import EVENT_TYPES
from towerlight.ids import time_ordered_id
from towerlight.queue import send_messages

MAX_BODY_BYTES = 256 * 1024
MAX_EVENTS_PER_REQUEST = 100
MAX_ID_CHARS = 128
MAX_CONTEXT_BYTES = 4096
MAX_FUTURE_SKEW = timedelta(minutes=5)  # client clocks drift; an hour ahead is a bug, not drift
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)


class MetricsSink(Protocol):
    """Where counts go: Powertools ``Metrics`` in Lambda; nothing when running under ``towerlight serve``."""

    def add_metric(self, name: str, unit: Any, value: float) -> Any: ...


def _identifier(value: str) -> str:
    # Postgres text and jsonb cannot hold NUL; untrimmed ids are a client bug ("u1 " is not "u1").
    if "\x00" in value or value != value.strip():
        raise ValueError("must not contain NUL characters or start or end with whitespace")
    return value


def check_timestamp(value: datetime, now: datetime | None = None) -> datetime:
    """The model's rule for times: ``value`` in UTC, not before 1970 nor too far ahead (raises ValueError).

    ``now`` (the current time, read when not given) lets a reader of many events read the clock once.
    """
    # An ISO-8601 time without an offset is read as UTC; any other offset is converted to UTC.
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value < EARLIEST_TIMESTAMP:
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    if value - (datetime.now(UTC) if now is None else now) > MAX_FUTURE_SKEW:
        limit = int(MAX_FUTURE_SKEW.total_seconds())
        raise ValueError(f"is more than {limit} s in the future (expected ISO-8601 or unix seconds)")
    return value


# Made once: json.dumps with options builds a new encoder on every call (most of its cost on a small dict).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def check_context(value: dict[str, Any]) -> dict[str, Any]:
    """The model's rule for ``context``: plain JSON of bounded size, no NUL (raises ValueError)."""
    try:
        encoded = _COMPACT_JSON.encode(value)
    except ValueError as exc:  # NaN or Infinity: not JSON, and Postgres jsonb refuses them
        raise ValueError("must be plain JSON (no NaN or Infinity)") from exc
    if len(encoded) > MAX_CONTEXT_BYTES:  # ASCII: the encoder escapes everything else
        raise ValueError(f"must be at most {MAX_CONTEXT_BYTES} bytes as compact JSON")
    if "\\u0000" in encoded:
        raise ValueError("must not contain NUL characters")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


# 8-4-4-4-12 hex digits, either case (stored lower-case).
EVENT_ID_PATTERN = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_identifier)]
# A string, not uuid.UUID: ingest validates thousands per batch and str(UUID) alone costs microseconds.
EventId = Annotated[str, StringConstraints(to_lower=True, pattern=f"^{EVENT_ID_PATTERN}$")]
EventTypeName = Literal[tuple(EVENT_TYPES)]  # type: ignore[valid-type]  # one table: event_types.py


class InteractionEvent(BaseModel):
    """One interaction, as clients send it and as it travels through SQS.

    ``timestamp`` accepts ISO-8601 (UTC when no offset is given) or unix seconds; it defaults to now.

    Example::

        >>> e = InteractionEvent.model_validate({"user_id": "u1", "item_id": "i9", "event_type": "click"})
        >>> e.to_message()
        '{"event_id":"5b0e...","user_id":"u1","item_id":"i9","event_type":"click","timestamp":"2025-..Z"}'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    event_id: EventId = Field(
        default_factory=time_ordered_id, description="UUID, the idempotency key; generated when absent"
    )
    user_id: Identifier
    item_id: Identifier
    event_type: EventTypeName
    value: float | None = Field(default=None, allow_inf_nan=False)
    timestamp: Annotated[datetime, AfterValidator(check_timestamp)] = Field(default_factory=_now)
    recommendation_id: Identifier | None = None
    context: Annotated[dict[str, Any], AfterValidator(check_context)] | None = None

    def to_message(self) -> str:
        """The SQS message body: canonical JSON, absent optional fields left out."""
        return self.model_dump_json(exclude_none=True)


@dataclass(frozen=True, slots=True)
class TrackBody:
    """The raw events of a request body, before validation; ``batch`` when it was ``{"events": [...]}``."""

    events: list[Any]
    batch: bool


def decode_track_body(body: bytes) -> TrackBody:
    """Check the size and shape of a ``POST /events`` body: one event object or ``{"events": [...]}``.

    Raises ``PayloadTooLargeError`` (413) over 256 KB or 100 events, ``MalformedRequestError`` (400)
    when the body is not JSON, ``ValidationError`` (422) for any other shape.

    Example::

        >>> decode_track_body(b'{"events": [{"user_id": "u1"}]}')
        TrackBody(events=[{'user_id': 'u1'}], batch=True)
    """
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"the request body is {len(body)} bytes, over the {MAX_BODY_BYTES} limit")
    try:
        # pydantic's parser, not json.loads: it refuses NaN and lone surrogates, which Postgres cannot store.
        payload = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise MalformedRequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValidationError('expected one event object or {"events": [...]}')
    if "events" not in payload:
        return TrackBody(events=[payload], batch=False)
    events, extra = payload["events"], sorted(set(payload) - {"events"})
    if extra or not isinstance(events, list) or not events:
        raise ValidationError(
            '"events" must be a non-empty list and the only field of a batch',
            details=[{"location": name, "message": "unexpected field"} for name in extra] or None,
        )
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLargeError(
            f"a request carries at most {MAX_EVENTS_PER_REQUEST} events, got {len(events)}",
        )
    return TrackBody(events=events, batch=True)


def validate_events(body: TrackBody) -> list[InteractionEvent]:
    """Validate every event of ``body``; one ``ValidationError`` (422) lists all problems found.

    Example::

        >>> validate_events(TrackBody([{"user_id": "u1", "item_id": "i9", "event_type": "nope"}], False))
        Traceback (most recent call last):
        towerlight.errors.ValidationError: 1 event is not valid; nothing was accepted
    """
    events: list[InteractionEvent] = []
    problems: list[dict[str, str]] = []
    invalid = 0
    for position, raw in enumerate(body.events):
        prefix = f"events.{position}." if body.batch else ""
        try:
            events.append(InteractionEvent.model_validate(raw))
        except pydantic.ValidationError as exc:
            invalid += 1
            problems += validation_problems(exc, prefix)
    if problems:
        noun = "event is" if invalid == 1 else "events are"
        raise ValidationError(f"{invalid} {noun} not valid; nothing was accepted", details=problems)
    return events


def validation_problems(exc: pydantic.ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic's errors as the API reports them: ``[{"location": "events.3.user_id", "message": ...}]``.

    Example::

        >>> validation_problems(exc, "events.0.")
        [{'location': 'events.0.event_id', 'message': 'must be a UUID (8-4-4-4-12 hex digits)'}]
    """
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if location == "event_id" and error["type"] == "string_pattern_mismatch":
            message = "must be a UUID (8-4-4-4-12 hex digits)"
        problems.append({"location": prefix + (location or "(event)"), "message": message})
    return problems


def enqueue_events(events: Sequence[InteractionEvent], *, queue_url: str | None = None) -> list[str]:
    """Send one SQS message per event (``EVENTS_QUEUE_URL`` by default); returns the event ids.

    If some messages are still not sent after retries, raises ``QueueError`` (503) whose details say
    exactly which events were accepted and which were not, so the client can resend the latter with
    the same ``event_id`` (resending an accepted one is harmless: ingest stores each id once).

    Example::

        >>> enqueue_events([event])
        ['5b0e7e0c-...']
    """
    url = queue_url or get_settings().require_queue()
    ids = [event.event_id for event in events]
    result = send_messages(url, [event.to_message() for event in events])
    if result.failed:
        raise QueueError(
            f"{len(result.failed)} of {len(events)} events could not be enqueued; "
            "resend the failed ones with the same event_id",
            details={
                "accepted": [ids[i] for i in result.sent],
                "failed": [
                    {"index": f.index, "event_id": ids[f.index], "reason": f"{f.code}: {f.message}"}
                    for f in result.failed
                ],
            },
        )
    return ids
