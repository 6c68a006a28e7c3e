"""Impressions on the events queue: one body format, told apart from interaction events, validated on arrival."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from towerlight.impressions import (
    Impression,
    InvalidImpressionError,
    impression_message,
    is_impression_message,
    parse_impression_message,
)
from towerlight.tracking import InteractionEvent

SHOWN = Impression(
    recommendation_id="9f1c7a2e-0000-4000-8000-000000000001",
    user_id="42",
    segment="warm",
    strategy="two_tower",
    model_version="20261130T000000Z-abcdef",
    item_ids=("50", "181", "1"),
    propensity=0.91,
    created_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    variant="control",
    item_propensities=(1.0, 0.5, 0.25),
)


def test_an_impression_survives_the_queue_unchanged() -> None:
    body = impression_message(SHOWN)
    assert is_impression_message(body)
    assert parse_impression_message(body) == SHOWN


def test_an_interaction_event_is_never_taken_for_an_impression() -> None:
    event = InteractionEvent.model_validate({"user_id": "u1", "item_id": "i9", "event_type": "click"})
    assert not is_impression_message(event.to_message())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"propensity": 0.0}, "propensity"),
        ({"created_at": "2026-11-30T12:00:00"}, "created_at"),
        ({"item_ids": []}, "one item propensity per item"),
        ({"surprise": 1}, "surprise"),
        ({"item_ids": [str(n) for n in range(101)], "item_propensities": None}, "item_ids"),
    ],
)
def test_an_invalid_impression_is_refused_with_its_reason(change: dict[str, object], reason: str) -> None:
    # GIVEN an impression body with one field broken
    fields = json.loads(impression_message(SHOWN))["impression"] | change
    # WHEN it is parsed  THEN the error names what is wrong
    with pytest.raises(InvalidImpressionError, match=reason):
        parse_impression_message(json.dumps({"impression": fields}, separators=(",", ":")))
