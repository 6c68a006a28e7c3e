"""The canonical-form reader of ingest against the pydantic model it stands in for.

``read_canonical`` may defer (None) on anything, but whenever it returns fields the model must accept
the same body and give the same fields; and it must not defer on what track actually writes.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from towerlight.event_fields import EventFields, fields_of, read_canonical, read_event_fields
from towerlight.event_types import EVENT_TYPES
from towerlight.tracking import InteractionEvent

PROPERTY = settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime.now(UTC)

# Characters that sit on the edges of the model's rules: quotes and escapes, NUL, ASCII and Unicode
# whitespace (str.strip() strips \x1c-\x1f too), non-ASCII letters, braces.
TRICKY = ' \t\n\x00\x1c\x1f\x7f"\\{}/\u00a0\u0085\u2028\u3000éß€😀'
PLAIN = st.characters(min_codepoint=32, max_codepoint=126)


def usually(plain: st.SearchStrategy[Any], tricky: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``plain`` (so the fast reader accepts often enough to be tested), sometimes ``tricky``."""
    return st.one_of(plain, plain, plain, tricky)


ids = usually(
    st.text(alphabet=PLAIN, min_size=1, max_size=130),
    st.one_of(
        st.text(alphabet=st.sampled_from("ab1-_:." + TRICKY), max_size=6),
        st.integers(-(10**20), 10**20),
        st.just(None),
    ),
)
event_types = usually(st.sampled_from(list(EVENT_TYPES)), st.sampled_from(["Click", "click ", "", "unknown", None]))
event_ids = usually(
    st.uuids().map(str),
    st.one_of(
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: f"{{{u}}}"),
        st.uuids().map(lambda u: str(u)[:-1] + "g"),
        st.just(None),
    ),
)
# Numbers as raw JSON text, so forms json.dumps never writes (-0, 1E5, 01, huge integers) appear too.
raw_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=17).map(str),
    st.sampled_from(
        ["-0", "0", "-0.0", "0.0", "1e5", "1E5", "01", "1.", ".5", "-", "1e400", "NaN", "null", '"3"', "true"]
    ),
)
recent = st.datetimes(min_value=datetime(1969, 12, 31), max_value=(NOW + timedelta(minutes=10)).replace(tzinfo=None))
any_moment = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
offsets = usually(
    st.sampled_from(["Z", "+00:00"]),
    st.sampled_from(["z", "-00:00", "+05:30", "-09:45", "+23:59", "+24:00", "", "+0530", "+05", " Z"]),
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    moment = draw(usually(recent, any_moment))
    sep = draw(usually(st.just("T"), st.sampled_from(" t")))
    text = moment.isoformat(
        sep=sep, timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes"]))
    )
    if draw(RARELY):
        text = text.split(".")[0] + "." + "7" * draw(st.integers(0, 9))
    return text + draw(offsets)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**25), 10**25),
    st.floats(),
    st.text(alphabet=st.sampled_from("a{}[]" + TRICKY), max_size=5),
)
contexts = usually(
    st.dictionaries(
        st.text(alphabet=PLAIN, max_size=4),
        st.one_of(st.integers(-1000, 1000), st.floats(-1, 1), st.text(PLAIN, max_size=8)),
        max_size=4,
    ),
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(alphabet='ab{}"\\', max_size=3), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)


RARELY = st.sampled_from([False] * 9 + [True])  # draws False first and most often


@st.composite
def bodies(draw: st.DrawFn) -> str:
    """A message body near track's canonical form: fields drawn tricky, sometimes missing, reordered or mangled."""
    fields: dict[str, str] = {}
    event_id = draw(event_ids)
    if event_id is not None or draw(st.booleans()):
        fields["event_id"] = json.dumps(event_id)
    for name in ("user_id", "item_id"):
        fields[name] = json.dumps(draw(ids), ensure_ascii=draw(st.booleans()))
    fields["event_type"] = json.dumps(draw(event_types))
    if draw(st.booleans()):
        fields["value"] = draw(raw_values)
    if not draw(RARELY):
        fields["timestamp"] = json.dumps(draw(timestamps()))
    if draw(st.booleans()):
        fields["recommendation_id"] = json.dumps(draw(ids))
    if draw(st.booleans()):
        fields["context"] = json.dumps(draw(contexts), ensure_ascii=draw(st.booleans()), separators=(",", ":"))
    items = list(fields.items())
    if draw(RARELY):
        items = draw(st.permutations(items))
    if draw(RARELY):
        items.append(draw(st.sampled_from([("user_id", '"again"'), ("extra", "1")])))
    body = "{" + ",".join(f'"{name}":{value}' for name, value in items) + "}"
    if draw(RARELY):  # a byte too many, too few, or a space where none is written
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from(["", " ", "}", "\\", '"'])) + body[at + draw(st.integers(0, 1)) :]
    return body


@st.composite
def valid_events(draw: st.DrawFn) -> InteractionEvent:
    # Ids without quotes or backslashes: the reader defers on escaped strings, which is allowed.
    printable = st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"\\'), min_size=1, max_size=128
    )
    moment = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=NOW.replace(tzinfo=None)))
    offset = timezone(timedelta(minutes=draw(st.integers(-23 * 60, 23 * 60))))
    fields: dict[str, Any] = {
        "user_id": draw(printable),
        "item_id": draw(printable),
        "event_type": draw(st.sampled_from(list(EVENT_TYPES))),
        "timestamp": moment.replace(tzinfo=offset),
    }
    if draw(st.booleans()):
        fields["event_id"] = str(draw(st.uuids()))
    if draw(st.booleans()):
        fields["value"] = draw(st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6).map(lambda v: round(v, 3))))
    if draw(st.booleans()):
        fields["recommendation_id"] = str(draw(st.uuids()))
    if draw(st.booleans()):
        page = draw(st.text(alphabet="abcXYZ019 _-/é", max_size=20))  # no braces: nested ones defer
        fields["context"] = {"page": page, "position": draw(st.integers(0, 99)), "score": draw(st.floats(0, 1))}
    return InteractionEvent.model_validate(fields)


TWEAKS = {
    "event_id": event_ids.map(json.dumps),
    "user_id": ids.map(json.dumps),
    "item_id": ids.map(json.dumps),
    "event_type": event_types.map(json.dumps),
    "value": raw_values,
    "timestamp": timestamps().map(json.dumps),
    "recommendation_id": ids.map(json.dumps),
    "context": contexts.map(lambda c: json.dumps(c, separators=(",", ":"))),
}


@st.composite
def tweaked(draw: st.DrawFn) -> str:
    """What track writes, with one field's JSON text replaced by a tricky one (or added when absent)."""
    fields = json.loads(draw(valid_events()).to_message())
    raw = {name: json.dumps(value, separators=(",", ":")) for name, value in fields.items()}
    name = draw(st.sampled_from(list(TWEAKS)))
    raw[name] = draw(TWEAKS[name])
    ordered = [(field, raw[field]) for field in InteractionEvent.model_fields if field in raw]
    return "{" + ",".join(f'"{field}":{value}' for field, value in ordered) + "}"


def model_fields(body: str) -> EventFields | None:
    """The model's reading of ``body`` (None when it refuses it), shaped like ``read_canonical``'s."""
    try:
        return fields_of(InteractionEvent.model_validate_json(body))
    except pydantic.ValidationError:
        return None


def assert_same(fast: EventFields, model: EventFields) -> None:
    assert fast == model
    assert fast.timestamp.utcoffset() == model.timestamp.utcoffset() == timedelta(0)
    if fast.value is not None:  # == does not tell 0.0 from -0.0
        assert math.copysign(1, fast.value) == math.copysign(1, model.value)
    assert json.dumps(fast.context) == json.dumps(model.context)  # same types inside (1 is not 1.0)


@PROPERTY
@given(st.one_of(tweaked(), bodies()))
@example('{"user_id":"u","item_id":"i","event_type":"click","value":-0,"timestamp":"2025-01-15T10:00:05Z"}')
@example('{"user_id":"u","item_id":"i","event_type":"click","timestamp":"2025-02-30T10:00:05Z"}')
@example('{"user_id":"u","item_id":"i","event_type":"click","timestamp":"1969-12-31T23:59:59.999999Z"}')
@example('{"user_id":"u","item_id":"i","event_type":"click","timestamp":"2025-01-15T10:00:05Z","context":{"a":1e400}}')
@example(
    '{"user_id":"u","item_id":"i","event_type":"click","timestamp":"2025-01-15T10:00:05Z","context":{"a":1,"a":2}}'
)
@example(
    '{"user_id":"u","item_id":"i","event_type":"click","timestamp":"2025-01-15T10:00:05Z","context":{"a":"\\ud800"}}'
)
@example(
    '{"user_id":"u","item_id":"i","event_type":"click","timestamp":"2025-01-15T10:00:05Z","context":{"a":"\\u0000"}}'
)
def test_whatever_the_fast_reader_accepts_the_model_accepts_identically(body: str) -> None:
    # GIVEN a body near the canonical form WHEN both read it
    fast = read_canonical(body)
    # THEN the fast reader either defers, or agrees with the model field for field
    if fast is not None:
        model = model_fields(body)
        assert model is not None, f"the model refuses what the fast reader accepted: {body!r}"
        assert_same(fast, model)


@PROPERTY
@given(valid_events())
def test_what_track_writes_is_read_by_the_fast_reader(event: InteractionEvent) -> None:
    # GIVEN an event as track enqueues it (its canonical message)
    body = event.to_message()
    # WHEN ingest reads it THEN the fast reader takes it, with the model's fields
    fast = read_canonical(body)
    assert fast is not None, body
    assert_same(fast, model_fields(body))
    assert fast.event_id == event.event_id


def test_an_event_without_an_event_id_says_so() -> None:
    body = '{"user_id":"u1","item_id":"i9","event_type":"click","timestamp":"2025-01-15T10:00:05Z"}'
    assert read_event_fields(body).event_id is None


def test_other_forms_are_read_by_the_model() -> None:
    # GIVEN valid events in forms track never writes (numeric id, unix time, spaces, no timestamp)
    bodies_ = [
        '{"user_id": 42, "item_id": "i9", "event_type": "click", "timestamp": 1736935205}',
        '{"event_type": "click", "item_id": "i9", "user_id": "u1"}',
    ]
    for body in bodies_:
        # THEN the fast reader defers and read_event_fields still reads them
        assert read_canonical(body) is None
        fields = read_event_fields(body)
        assert fields.item_id == "i9" and fields.event_type == "click"
    assert read_event_fields(bodies_[0]).user_id == "42"
    assert read_event_fields(bodies_[0]).timestamp == datetime(2025, 1, 15, 10, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        '{"user_id":"u1","item_id":"i9","event_type":"clicked","timestamp":"2025-01-15T10:00:05Z"}',
        '{"user_id":"u1 ","item_id":"i9","event_type":"click","timestamp":"2025-01-15T10:00:05Z"}',
        '{"user_id":"u1","item_id":"i9","event_type":"click","timestamp":"2125-01-15T10:00:05Z"}',
        "not json",
    ],
)
def test_invalid_events_raise_the_models_error(body: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        read_event_fields(body)
    assert read_canonical(body) is None
