"""An event message's fields: read directly when it is in track's canonical form, by the model otherwise.

Ingest validates thousands of SQS messages per batch, and ``InteractionEvent.model_validate_json``
costs ~6 µs a message. The messages are nearly always exactly what the track function wrote
(``InteractionEvent.to_message()``: compact JSON, fields in model order, absent ones left out), so
``read_canonical`` matches that form with one regular expression whose every part accepts only what
the model accepts, then applies the model's own checks of time and context. Anything else goes to
the model: ``read_canonical`` never rejects, it only defers (to pydantic, which also words the
errors). Whenever it returns fields they equal the model's (tests/unit/test_event_fields.py
compares the two on generated tricky messages).

Example::

    >>> read_event_fields('{"user_id":"u1","item_id":"i9","event_type":"click","timestamp":"2025-01-15T10:00:05Z"}')
    EventFields(event_id=None, user_id='u1', item_id='i9', event_type='click', value=None, ...)
    >>> read_canonical('{"user_id": 42, "item_id": "i9", "event_type": "click"}') is None  # the model decides
    True
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import pydantic_core

from towerlight.event_types import EVENT_TYPES
from towerlight.tracking import EVENT_ID_PATTERN, MAX_ID_CHARS, InteractionEvent, check_context, check_timestamp

# Printable ASCII but '"' and '\' (so the JSON string has no escapes), not starting or ending with a
# space: exactly what the model's id rules (length, no NUL, no surrounding whitespace) let through.
_ID = rf"[!#-\[\]-~](?:[ !#-\[\]-~]{{0,{MAX_ID_CHARS - 2}}}[!#-\[\]-~])?"
# A JSON number the model reads as a float exactly as float() does: no exponent, ≤ 15 integer digits,
# and not the integer -0 (the model reads it as the integer 0, float() as -0.0).
_VALUE = r"-?[1-9][0-9]{0,14}(?:\.[0-9]{1,17})?|-?0\.[0-9]{1,17}|0"
# ISO-8601 to the second or finer, with Z or an offset; the model also reads other forms (unix seconds,
# a space for T, no offset), which take its path.
_TIMESTAMP = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_EVENT_TYPE = "|".join(re.escape(name) for name in EVENT_TYPES)
# A context object without nested objects (it cannot contain a brace); parsed and checked separately.
_CONTEXT = r"\{[^{}]*\}"
_CANONICAL = re.compile(
    rf'\{{(?:"event_id":"({EVENT_ID_PATTERN})",)?"user_id":"({_ID})","item_id":"({_ID})",'
    rf'"event_type":"({_EVENT_TYPE})"(?:,"value":({_VALUE}))?,"timestamp":"({_TIMESTAMP})"'
    rf'(?:,"recommendation_id":"({_ID})")?(?:,"context":({_CONTEXT}))?\}}'
)


class EventFields(NamedTuple):
    """A valid event's fields; ``event_id`` is None when the message had none (the caller derives one)."""

    event_id: str | None
    user_id: str
    item_id: str
    event_type: str
    value: float | None
    timestamp: datetime
    recommendation_id: str | None
    context: dict[str, Any] | None


def read_event_fields(body: str) -> EventFields:
    """The fields of the event in ``body`` (JSON): directly when canonical, else through ``InteractionEvent``.

    Raises ``pydantic.ValidationError`` when ``body`` is not a valid event.
    """
    fields = read_canonical(body)
    if fields is not None:
        return fields
    return fields_of(InteractionEvent.model_validate_json(body))


def fields_of(event: InteractionEvent) -> EventFields:
    """A validated event's fields; ``event_id`` is None unless the message itself carried one."""
    return EventFields(
        event.event_id if "event_id" in event.model_fields_set else None,
        event.user_id,
        event.item_id,
        event.event_type,
        event.value,
        event.timestamp,
        event.recommendation_id,
        event.context,
    )


def read_canonical(body: str, now: datetime | None = None) -> EventFields | None:
    """``body``'s fields when it is an event in track's canonical form that the model accepts; else None.

    None means "ask the model": ``body`` may still be a valid event in another form. ``now`` is the
    current time (read when not given: a reader of many bodies passes it once, see ``check_timestamp``).
    """
    match = _CANONICAL.fullmatch(body)
    if match is None:
        return None
    event_id, user_id, item_id, event_type, value, timestamp, recommendation_id, context = match.groups()
    try:
        return EventFields(
            None if event_id is None else event_id.lower(),
            user_id,
            item_id,
            event_type,
            None if value is None else float(value),
            check_timestamp(datetime.fromisoformat(timestamp), now),
            recommendation_id,
            None if context is None else _context(context),
        )
    except ValueError:  # an impossible date, a time out of range, a context the model refuses
        return None


def _context(text: str) -> dict[str, Any]:
    value = pydantic_core.from_json(text, allow_inf_nan=False)  # the model's parser; ValueError if not JSON
    if type(value) is not dict:
        raise ValueError("not an object")
    return check_context(value)
