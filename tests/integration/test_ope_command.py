"""``towerlight ope`` on impressions and click events stored in a real Postgres by the ingest write path."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from towerlight.db.events import EventRow, insert_events
from towerlight.event_types import EVENT_TYPES
from towerlight.impressions import Impression, record_feedback
from towerlight_offline.cli import main

pytestmark = pytest.mark.integration

# Click-through of each strategy in each segment; the logs choose uniformly between the two.
CLICK_RATES = {
    ("warm", "two_tower"): 0.30,
    ("warm", "popularity"): 0.10,
    ("cold", "two_tower"): 0.05,
    ("cold", "popularity"): 0.20,
}


def test_ope_estimates_a_candidate_from_logged_impressions(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 3000 impressions served by a uniform choice of strategy, and clicks at known rates
    rng = np.random.default_rng(9)
    created = datetime.now(UTC) - timedelta(hours=1)
    impressions, clicks = [], []
    for n in range(3000):
        segment = "warm" if n % 3 else "cold"
        strategy = ("two_tower", "popularity")[int(rng.integers(2))]
        rec = str(uuid.uuid4())
        impressions.append(Impression(rec, f"u{n}", segment, strategy, "v1", ("i1", "i2"), 0.5, created))
        if rng.random() < CLICK_RATES[(segment, strategy)]:
            clicks.append(EventRow(str(uuid.uuid4()), f"u{n}", "i2", "click", None, created, rec))
    with db.transaction():
        insert_events(db, clicks)
        record_feedback(db, impressions, [c.recommendation_id for c in clicks])
    # WHEN evaluating "two_tower for warm users, popularity for cold ones"
    code = main(["ope", "--policy", "warm:two_tower", "--policy", "cold:popularity", "--settle-minutes", "0", "--json"])
    # THEN every estimate's interval covers its true value (2/3 × 0.30 + 1/3 × 0.20 clicks, at a click's reward)
    report = json.loads(capsys.readouterr().out)
    truth = (2 / 3 * 0.30 + 1 / 3 * 0.20) * EVENT_TYPES["click"].reward
    assert code == 0 and report["decisions"] == 3000 and report["unsupported_mass"] == 0.0
    for estimate in report["estimates"]:
        assert estimate["low"] <= truth <= estimate["high"], estimate


def test_ope_explains_what_it_cannot_evaluate(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN no impressions WHEN asked THEN it says so; and a malformed policy is refused before any read
    assert main(["ope", "--policy", "two_tower", "--settle-minutes", "0"]) == 2
    assert "no impressions logged" in capsys.readouterr().err
    assert main(["ope", "--policy", "two_tower=much"]) == 2
    assert "must be numbers" in capsys.readouterr().err
