"""The strategy-bandit simulator on a real Postgres: Thompson finds each segment's best, OPE recovers the truth."""

from __future__ import annotations

import json

import psycopg
import pytest

from towerlight_offline.cli import main
from towerlight_offline.simulate import DEFAULT_WORLD, simulate

pytestmark = pytest.mark.integration


def test_thompson_finds_each_segments_best_strategy_and_ope_recovers_the_true_values(db: psycopg.Connection) -> None:
    # GIVEN cold and warm users whose best strategies differ (popularity 8%, two_tower 12% clicks)
    # WHEN 5000 requests go through the bandit and the ingest write path, counters read every 100
    result = simulate(db, DEFAULT_WORLD, rounds=5000, refresh=100, seed=0)
    # THEN the last 10% of requests went at least 80% to their segment's best strategy (seeds 0-6 of the
    # command: 83.6% to 92.9%, 80% of a 500-request window first reached after 1711 to 3873 requests)
    assert result.best_share_last >= 0.8 and result.rounds_to_80 is not None
    # AND the logged propensities estimate each fixed strategy's true value: nominal 95% intervals, so
    # nearly all of the nine (3 strategies x IPS, SNIPS, DR) cover it
    covered = [e.low <= truth <= e.high for truth, estimates in result.ope.values() for e in estimates]
    assert len(covered) == 9 and sum(covered) >= 7


def test_the_simulate_command_runs_in_a_schema_of_its_own(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--rounds", "300", "--refresh", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rounds"] == 300 and set(report["ope"]) == {"content", "popularity", "two_tower"}
    with psycopg.connect(db_url) as conn:  # nothing was written to this test's schema
        assert conn.execute("SELECT count(*) FROM impressions").fetchone() == (0,)
