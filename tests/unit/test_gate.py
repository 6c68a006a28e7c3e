"""The quality gate: promote unless the new model is worse than the current one beyond the tolerance."""

from __future__ import annotations

import math
from typing import Any

import pytest

from towerlight_offline.gate import decide


def _manifest(ndcg: float | None, version: str = "v1") -> dict[str, Any]:
    metrics = {} if ndcg is None else {"two_tower": {"ndcg@10": ndcg, "recall@10": 0.1}}
    return {"version": version, "metrics": metrics}


def test_first_version_is_promoted() -> None:
    decision = decide({"ndcg@10": 0.05}, None)
    assert decision.promote
    assert decision.current is None and "no current version" in decision.reason


@pytest.mark.parametrize(
    ("new", "current", "promote"),
    [
        (0.30, 0.20, True),  # better
        (0.20, 0.20, True),  # equal
        (0.1981, 0.20, True),  # just under 1% worse: inside the relative tolerance
        (0.1979, 0.20, False),  # just beyond it
        (0.10, 0.20, False),  # clearly worse
    ],
)
def test_relative_tolerance(new: float, current: float, promote: bool) -> None:
    # GIVEN a current version and a new model's metrics
    # WHEN the gate decides with the default 1% tolerance
    decision = decide({"ndcg@10": new}, _manifest(current))
    # THEN it promotes exactly when new >= current * 0.99
    assert decision.promote is promote
    assert decision.new == new and decision.current == current
    assert decision.current_version == "v1"


def test_zero_tolerance_rejects_any_regression() -> None:
    assert not decide({"ndcg@10": 0.1999}, _manifest(0.2), tolerance=0.0).promote


def test_another_metric_can_be_gated() -> None:
    decision = decide({"recall@10": 0.05, "ndcg@10": 0.9}, _manifest(0.2), metric="recall@10")
    assert not decision.promote and decision.metric == "recall@10"


def test_a_current_version_without_the_metric_does_not_block() -> None:
    decision = decide({"ndcg@10": 0.1}, _manifest(None, "legacy"))
    assert decision.promote and "legacy" in decision.reason


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, "n/a"])
def test_a_missing_or_non_finite_new_metric_is_never_promoted(bad: Any) -> None:
    assert not decide({"ndcg@10": bad}, None).promote


def test_tolerance_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        decide({"ndcg@10": 0.1}, None, tolerance=1.5)


def test_decision_serialises_to_plain_json() -> None:
    data = decide({"ndcg@10": 0.1}, _manifest(0.2)).to_json()
    assert data["promote"] is False and data["metric"] == "ndcg@10" and data["tolerance"] == 0.01


def test_rows_on_the_same_events_replace_the_recorded_ones() -> None:
    # GIVEN a current version whose recorded NDCG is far above both models' figures on later events
    same = ({"ndcg@10": 0.15}, {"ndcg@10": 0.14}, "the same 40 users' events after 1998-01-01")
    # WHEN the gate decides with those rows
    decision = decide({"ndcg@10": 0.10}, _manifest(0.30), same_events=same)
    # THEN it compares the two later-event figures and says so
    assert decision.promote and decision.basis == "same events"
    assert (decision.new, decision.current) == (0.15, 0.14)
    assert "after 1998-01-01" in decision.reason
    # AND the same rows the other way round keep the current model
    worse = decide({"ndcg@10": 0.5}, _manifest(0.01), same_events=(same[1] | {"ndcg@10": 0.10}, same[1], same[2]))
    assert not worse.promote and worse.current == 0.14


def test_without_later_events_the_recorded_row_is_the_basis() -> None:
    decision = decide({"ndcg@10": 0.25}, _manifest(0.30))
    assert decision.basis == "recorded" and not decision.promote
