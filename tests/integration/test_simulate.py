"""``towerlight simulate`` end to end: the real handlers, moto's SQS and S3, Postgres, a model trained by the
real pipeline, against users whose true preferences are known."""

from __future__ import annotations

import json
from typing import Any

import pytest

from towerlight.bandit.policy import BANDIT_ENV
from towerlight_offline.cli import main

pytestmark = pytest.mark.integration

ROUNDS = 400


@pytest.fixture(scope="module")
def report(session_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small simulation (a minute or two: training, then the rounds), in schemas of its own on the
    session's database: Thompson sampling between content and popularity, in a world where users care a
    lot about their favourite categories (what content finds), so one arm is clearly best; then VW."""
    out = tmp_path_factory.mktemp("simulation")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", session_database_url)
        argv = ["simulate", "--rounds", str(ROUNDS), "--policy", f"pair:{BANDIT_ENV}=content,popularity",
                "--policy", "vw",
                "--favourite", "3", "--users", "600", "--items", "300", "--events", "15000", "--epochs", "2",
                "--warm-users", "80", "--cold-users", "10", "--drain-every", "10", "--duplicate-rate", "0.3",
                "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"simulation.md", "simulation.json", "simulation.png"}
    return json.loads((out / "simulation.json").read_text())


def test_postgres_holds_exactly_what_the_simulated_users_did(report: dict[str, Any]) -> None:
    # GIVEN clicks sent through track (30% of calls twice), impressions sent by recommend, both drained
    # through ingest every 10 rounds
    policy = report["policies"][0]
    assert policy["rounds"] == ROUNDS and policy["retried"] > 0
    # THEN each click is stored once, each request's impression once with the reward its clicks earned,
    # and the bandit counters add up to exactly those impressions and rewards, per segment and arm
    checks = {c["name"].split(" (")[0]: c for c in policy["checks"]}
    assert checks["click events stored"]["stored"] == policy["clicks"] > 0
    assert checks["impressions stored"]["stored"] == ROUNDS
    assert checks["impression reward sum"]["stored"] == pytest.approx(policy["realized_reward"])
    assert [c["name"] for c in policy["checks"] if not c["ok"]] == []
    assert any(name.startswith("bandit impressions warm/") for name in checks)


def test_each_response_is_the_list_its_strategy_shows_and_no_better_than_the_oracle(report: dict[str, Any]) -> None:
    policy = report["policies"][0]
    # the bandit only chooses the strategy: the items are those the fixed strategy shows at that moment
    assert policy["same_as_fixed"] == ROUNDS
    assert policy["expected_reward"] <= policy["oracle_reward"]
    assert 0 < policy["regret"] < policy["oracle_reward"]


def test_thompson_moves_warm_traffic_to_the_arm_of_highest_true_value(report: dict[str, Any]) -> None:
    bandit = report["policies"][0]["bandit"]
    truths = bandit["true_values"]
    # GIVEN two arms whose true values differ by a lot (about 0.35 vs 0.25 per request in earlier runs)
    assert bandit["best"] == max(truths, key=truths.get) == "content"
    assert truths["content"] - truths["popularity"] > 0.03
    # THEN the later warm requests mostly went to it (earlier runs: about 80% from the second quarter on;
    # 5% of traffic stays uniform exploration)
    quarters = bandit["share_by_quarter"]
    assert min(quarters[2:]) >= 0.6, quarters


def test_off_policy_estimates_are_near_the_true_values(report: dict[str, Any]) -> None:
    rows = report["policies"][0]["ope"]
    assert {(r["strategy"], r["estimator"]) for r in rows} == {
        (s, e) for s in ("content", "popularity") for e in ("ips", "snips", "dr")
    }
    # the most played arm has the most logged support: each estimate within two interval widths of the truth
    for row in (r for r in rows if r["strategy"] == "content"):
        assert abs(row["value"] - row["truth"]) <= 2 * (row["high"] - row["low"]), row


def test_vw_learns_online_even_after_another_policy_ran_in_the_process(report: dict[str, Any]) -> None:
    # GIVEN the VW policy run second (ingest's learner is set up when its module is imported)
    vw = report["policies"][1]
    assert vw["policy"] == "vw"
    # THEN every auto request made a decision, ingest learned models that later requests used, and Postgres
    # still holds exactly what the users did
    assert vw["item_decisions"] == ROUNDS and vw["item_models_used"] > 1
    assert [c["name"] for c in vw["checks"] if not c["ok"]] == []
    assert vw["expected_reward"] <= vw["oracle_reward"]
