"""The admin Lambda handler, called with the events/admin_*.json files, on a real store and real Postgres.

Model versions are published with ``publish_version`` (small stand-in files: the admin API never opens
them); the retrain function is replaced by a recording Lambda client, as it is only ever invoked
asynchronously. Statistics read events inserted the way the ingest function writes them.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.admin import runs, service
from towerlight.admin.online import wilson_interval
from towerlight.bandit.arms import read_arms
from towerlight.bandit.thompson import current_probabilities
from towerlight.db.catalog import ItemRow, UserRow, upsert_items, upsert_users
from towerlight.db.events import EventRow, insert_events
from towerlight.event_types import EVENT_TYPES
from towerlight.impressions import Impression, record_feedback
from towerlight.store import open_store
from towerlight.store.versions import current_version, promote, publish_version

OPERATOR = "arn:aws:sts::123456789012:assumed-role/TowerlightOperator/ops-session"  # in events/admin_*.json
RETRAIN_FUNCTION = "towerlight-RetrainFunction-abc123"


class RecordingLambda:
    """Stands in for boto3's Lambda client: records ``invoke`` calls, answers like Lambda does."""

    def __init__(self, status: int = 202, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = status
        self.error = error

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.calls.append(kwargs)
        return {"StatusCode": self.status}


@pytest.fixture
def lambda_client(monkeypatch: pytest.MonkeyPatch) -> RecordingLambda:
    client = RecordingLambda()
    monkeypatch.setattr(service, "_lambda_client", lambda: client)
    monkeypatch.setenv("RETRAIN_FUNCTION_NAME", RETRAIN_FUNCTION)
    return client


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """functions/admin/app.py, imported with Powertools configured for tests."""
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    return fresh_handler("admin")


def call(admin: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = admin.handler(event, LambdaContext(function_name="admin"))
    return response["statusCode"], json.loads(response["body"])


def routed(name: str, **path_parameters: str) -> dict[str, Any]:
    """An events/ file with its path parameters replaced (raw path and request context follow)."""
    event = copy.deepcopy(load_event(name))
    path = event["rawPath"]
    for key, value in path_parameters.items():
        path = path.replace(event["pathParameters"][key], value)
        event["pathParameters"][key] = value
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    return event


def with_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    return event | {"body": json.dumps(body)}


def publish(store_uri: str, tmp_path: Path, ndcg: float, when: datetime) -> str:
    """Publish a small stand-in version whose manifest carries a metrics table; returns its id."""
    version = f"{when:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    weights = tmp_path / f"{version}.bin"
    weights.write_bytes(version.encode())
    manifest = {"metrics": {"two_tower": {"ndcg@10": ndcg}}, "data": {"source": "test"}}
    publish_version(open_store(store_uri), version, {"ranker.json": weights}, manifest)
    return version


@pytest.fixture
def versions(store_uri: str, tmp_path: Path) -> list[str]:
    """Three published versions, oldest first; the newest two promoted in turn (CURRENT = newest)."""
    start = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    ids = [publish(store_uri, tmp_path, 0.20 + i / 100, start + timedelta(days=i)) for i in range(3)]
    store = open_store(store_uri)
    promote(store, ids[1])
    promote(store, ids[2])
    return ids


# ------------------------------------------------------------------------------------------- models


def test_health_answers_without_a_store_or_database(admin: ModuleType) -> None:
    status, body = call(admin, load_event("health_admin.json"))
    assert status == 200
    assert body["status"] == "ok" and body["function"] == "admin"


def test_model_status_before_anything_is_published(admin: ModuleType, store_uri: str) -> None:
    # GIVEN an empty store  WHEN an operator asks for the model
    status, body = call(admin, load_event("admin_model.json"))
    # THEN nothing is current, and no error
    assert status == 200
    assert body == {"store": store_uri, "current": None, "manifest": None, "metrics": None, "versions": []}


def test_model_status_shows_current_manifest_metrics_and_versions(admin: ModuleType, versions: list[str]) -> None:
    status, body = call(admin, load_event("admin_model.json"))
    assert status == 200
    assert body["current"]["version"] == versions[2]
    assert body["current"]["previous"] == versions[1]
    assert body["manifest"]["version"] == versions[2]
    assert body["metrics"] == {"two_tower": {"ndcg@10": 0.22}}
    assert [v["version"] for v in body["versions"]] == versions[::-1]
    assert [v["is_current"] for v in body["versions"]] == [True, False, False]


def test_promote_points_current_at_the_version_and_names_the_operator(
    admin: ModuleType, store_uri: str, versions: list[str]
) -> None:
    # GIVEN the newest version is current  WHEN the oldest is promoted
    status, body = call(admin, routed("admin_promote.json", version=versions[0]))
    # THEN CURRENT names it, the previous one is remembered, and the IAM caller is reported
    assert status == 200
    assert body["current"]["version"] == versions[0]
    assert body["current"]["previous"] == versions[2]
    assert body["actor"] == OPERATOR
    assert current_version(open_store(store_uri)) == versions[0]


def test_promote_with_a_stale_expected_current_is_a_conflict(
    admin: ModuleType, store_uri: str, versions: list[str]
) -> None:
    event = with_body(routed("admin_promote.json", version=versions[0]), {"expected_current": versions[1]})
    status, body = call(admin, event)
    assert status == 409
    assert body["error"]["code"] == "pointer_conflict"
    assert current_version(open_store(store_uri)) == versions[2]


def test_promote_an_unknown_or_malformed_version_changes_nothing(
    admin: ModuleType, store_uri: str, versions: list[str]
) -> None:
    status, body = call(admin, routed("admin_promote.json", version="20990101T000000Z-ffffff"))
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = call(admin, routed("admin_promote.json", version="bad..name"))
    assert (status, body["error"]["code"]) == (422, "invalid_request")
    status, body = call(admin, with_body(routed("admin_promote.json", version=versions[0]), {"force": True}))
    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert current_version(open_store(store_uri)) == versions[2]


def test_rollback_returns_to_the_previous_version_then_further_back(
    admin: ModuleType, store_uri: str, versions: list[str]
) -> None:
    status, body = call(admin, load_event("admin_rollback.json"))
    assert status == 200
    assert body["current"]["version"] == versions[1]
    assert body["rolled_back_from"] == versions[2]
    status, body = call(admin, load_event("admin_rollback.json"))
    assert (status, body["current"]["version"]) == (200, versions[0])
    # nothing older than the oldest version
    status, body = call(admin, load_event("admin_rollback.json"))
    assert (status, body["error"]["code"]) == (409, "nothing_to_roll_back")
    assert current_version(open_store(store_uri)) == versions[0]


def test_rollback_before_any_promote_is_a_conflict(admin: ModuleType, store_uri: str) -> None:
    status, body = call(admin, load_event("admin_rollback.json"))
    assert (status, body["error"]["code"]) == (409, "nothing_to_roll_back")


# ------------------------------------------------------------------------------------------- retraining


def test_retrain_invokes_the_retrain_function_asynchronously_and_records_a_queued_job(
    admin: ModuleType, lambda_client: RecordingLambda, db: psycopg.Connection
) -> None:
    # WHEN an operator asks for a retraining over 30 days
    status, body = call(admin, load_event("admin_retrain.json"))
    # THEN 202 with a job id, and the retrain function got an Event invocation keyed by that id
    assert status == 202
    job_id = body["job_id"]
    assert uuid.UUID(job_id) and body["status"] == "queued"
    [invocation] = lambda_client.calls
    assert invocation["FunctionName"] == RETRAIN_FUNCTION
    assert invocation["InvocationType"] == "Event"
    payload = json.loads(invocation["Payload"])
    assert payload == {"execution_id": job_id, "trigger": "admin", "requested_by": OPERATOR, "window_days": 30}
    # AND the job can be followed until the retrain function picks it up
    status, job = call(admin, routed("admin_retrain_job.json", job_id=job_id))
    assert status == 200
    assert (job["execution_id"], job["status"], job["trigger"]) == (job_id, "queued", "admin")
    assert job["detail"]["requested_by"] == OPERATOR
    run = runs.get_run(db, job_id)
    assert run is not None and run.status == "queued"


def test_retrain_job_shows_the_run_the_retrain_function_recorded(admin: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN a run the retrain function claimed and finished
    job_id = str(uuid.uuid4())
    runs.claim_run(db, job_id, "admin", {"window": {"since": "a", "until": "b"}})
    runs.finish_run(db, job_id, "succeeded", version="20261122T031502Z-0a1b2c", promoted=True)
    # WHEN it is looked up  THEN the outcome is there
    status, job = call(admin, routed("admin_retrain_job.json", job_id=job_id))
    assert status == 200
    assert (job["status"], job["version"], job["promoted"], job["attempts"]) == (
        "succeeded",
        "20261122T031502Z-0a1b2c",
        True,
        1,
    )
    status, body = call(admin, routed("admin_retrain_job.json", job_id=str(uuid.uuid4())))
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_retrain_without_a_body_uses_the_default_window(
    admin: ModuleType, lambda_client: RecordingLambda, db_url: str
) -> None:
    event = load_event("admin_retrain.json") | {"body": None}
    status, _ = call(admin, event)
    assert status == 202
    assert "window_days" not in json.loads(lambda_client.calls[0]["Payload"])


def test_retrain_refuses_a_bad_window_and_reports_an_unreachable_function(
    admin: ModuleType, lambda_client: RecordingLambda, db_url: str
) -> None:
    status, body = call(admin, with_body(load_event("admin_retrain.json"), {"window_days": 0}))
    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert lambda_client.calls == []
    lambda_client.error = RuntimeError("Rate exceeded")
    status, body = call(admin, load_event("admin_retrain.json"))
    assert (status, body["error"]["code"]) == (503, "retrain_unavailable")


def test_retrain_is_a_configuration_error_without_a_retrain_function(
    admin: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an admin function deployed without RETRAIN_FUNCTION_NAME
    monkeypatch.delenv("RETRAIN_FUNCTION_NAME", raising=False)
    # WHEN a retrain is asked for
    status, body = call(admin, load_event("admin_retrain.json"))
    # THEN it is a 503 naming the configuration problem (retry once the deployment is fixed)
    assert (status, body["error"]["code"]) == (503, "configuration_error")


# ------------------------------------------------------------------------------------------- stats


def event_row(user: str, item: str, kind: str, ts: datetime, recommendation_id: str | None = None) -> EventRow:
    return EventRow(str(uuid.uuid4()), user, item, kind, None, ts, recommendation_id)


@pytest.fixture
def activity(db: psycopg.Connection) -> datetime:
    """Two days of events: impressions, attributed and unattributed clicks, views, a purchase, a block."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    rec = str(uuid.uuid4())
    rows = [
        *(event_row("42", item, "impression", yesterday, rec) for item in ("1", "2", "3", "4")),
        event_row("42", "1", "click", yesterday + timedelta(minutes=1), rec),
        event_row("42", "1", "purchase", yesterday + timedelta(minutes=5)),
        *(event_row("7", item, "impression", today, rec) for item in ("1", "2")),
        event_row("7", "1", "click", today + timedelta(minutes=1), rec),
        event_row("7", "2", "click", today + timedelta(minutes=2)),  # not from a recommendation
        event_row("7", "3", "view", today + timedelta(minutes=3)),
        event_row("42", "3", "block", today + timedelta(minutes=4)),
        event_row("42", "9", "view", today - timedelta(days=400)),  # outside any window
    ]
    with db.transaction():
        insert_events(db, rows)
        upsert_items(db, [ItemRow("1", "Toy Story (1995)", ["Animation"]), ItemRow("3", "Heat (1995)", ["Crime"])])
        upsert_users(db, [UserRow("42", {"age": 24}), UserRow("quiet", {"age": 51})])
    return today


def test_stats_count_events_per_type_and_day_with_ctr_and_popular_items(admin: ModuleType, activity: datetime) -> None:
    status, body = call(admin, load_event("admin_stats.json"))
    assert status == 200
    assert body["window"]["days"] == 30
    assert body["totals"] == {"block": 1, "click": 3, "impression": 6, "purchase": 1, "view": 1}
    today, yesterday = activity.date().isoformat(), (activity - timedelta(days=1)).date().isoformat()
    assert {"day": yesterday, "event_type": "impression", "events": 4} in body["events_per_day"]
    assert {"day": today, "event_type": "click", "events": 2} in body["events_per_day"]
    ctr = body["ctr"]
    assert (ctr["impressions"], ctr["clicks"], ctr["attributed_clicks"]) == (6, 3, 2)
    assert ctr["ctr"] == pytest.approx(2 / 6)
    assert [d["ctr"] for d in ctr["per_day"]] == [pytest.approx(0.25), pytest.approx(0.5)]
    # positive events: item 1 clicked twice and bought once; titles come from the catalogue
    assert body["popular_items"][0] == {"item_id": "1", "title": "Toy Story (1995)", "events": 3, "users": 2}
    assert {i["item_id"] for i in body["popular_items"]} == {"1", "2", "3"}


def test_stats_validate_their_query(admin: ModuleType, db_url: str) -> None:
    event = load_event("admin_stats.json")
    bad = event | {"rawQueryString": "days=0", "queryStringParameters": {"days": "0"}}
    status, body = call(admin, bad)
    assert (status, body["error"]["code"]) == (422, "invalid_request")


def test_user_stats_show_counts_recent_events_and_removed_items(admin: ModuleType, activity: datetime) -> None:
    status, body = call(admin, load_event("admin_stats_user.json"))
    assert status == 200
    assert body["user_id"] == "42"
    assert body["attributes"] == {"age": 24}
    assert body["events"] == {"block": 1, "click": 1, "impression": 4, "purchase": 1, "view": 1}
    assert body["total_events"] == 8
    assert body["removed_items"] == ["3"]
    assert len(body["recent_events"]) == 8  # recent=10 in the event file
    assert body["recent_events"][0]["event_type"] == "block"
    assert body["first_seen"] < body["last_seen"]


def test_user_stats_for_a_user_with_attributes_only_or_nothing(admin: ModuleType, activity: datetime) -> None:
    status, body = call(admin, routed("admin_stats_user.json", user_id="quiet"))
    assert status == 200
    assert (body["events"], body["recent_events"], body["first_seen"]) == ({}, [], None)
    status, body = call(admin, routed("admin_stats_user.json", user_id="nobody"))
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_online_stats_show_the_arms_and_each_variant_with_intervals(admin: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN 40 control and 20 treatment impressions of today, where 10 and 8 were clicked and 2 and 4 bought
    now = datetime.now(UTC)
    shown, rows = [], []
    for n in range(60):
        variant, strategy, version = ("control", "two_tower", "v1") if n < 40 else ("treatment", "popularity", "v2")
        rec = f"rec-{n}"
        shown.append(Impression(rec, f"u{n}", "warm", strategy, version, ("1", "2"), 0.5, now, variant))
        clicked, bought = (n < 10, n < 2) if n < 40 else (n < 48, n < 44)
        if clicked:
            rows.append(event_row(f"u{n}", "2", "click", now, rec))
        if bought:
            rows.append(event_row(f"u{n}", "2", "purchase", now, rec))
    with db.transaction():
        insert_events(db, rows)
        record_feedback(db, shown, [r.recommendation_id for r in rows])
    # WHEN an operator asks for the online statistics
    status, body = call(admin, load_event("admin_stats_online.json"))
    # THEN each variant's click-through and conversion are exact, inside their Wilson intervals
    assert status == 200
    control, treatment = body["variants"]
    assert (control["variant"], control["impressions"], treatment["variant"], treatment["impressions"]) == (
        "control",
        40,
        "treatment",
        20,
    )
    assert (control["model_versions"], treatment["model_versions"]) == (["v1"], ["v2"])
    assert (control["ctr"]["value"], control["conversion"]["value"]) == (0.25, 0.05)
    assert (treatment["ctr"]["value"], treatment["conversion"]["value"]) == (0.4, 0.2)
    for rate in (control["ctr"], control["conversion"], treatment["ctr"], treatment["conversion"]):
        assert rate["low"] < rate["value"] < rate["high"]
    assert (control["ctr"]["low"], control["ctr"]["high"]) == pytest.approx(wilson_interval(10, 40), abs=1e-6)
    # AND the arms hold the counters, with Thompson's current probabilities summing to one per segment
    arms = {a["strategy"]: a for a in body["arms"]}
    assert (arms["two_tower"]["impressions"], arms["popularity"]["impressions"]) == (40, 20)
    assert arms["popularity"]["mean_reward"] == pytest.approx((4 * 1.0 + 4 * 0.5) / 20)
    assert sum(a["thompson_probability"] for a in body["arms"]) == pytest.approx(1.0)


# Click-through of each strategy in each segment; the logged policy chose between the two uniformly.
OPE_CLICK_RATES = {
    ("warm", "two_tower"): 0.30,
    ("warm", "popularity"): 0.10,
    ("cold", "two_tower"): 0.05,
    ("cold", "popularity"): 0.20,
}


def log_uniform_impressions(db: psycopg.Connection, n: int, when: datetime) -> None:
    """n impressions (2/3 warm) with a uniformly chosen strategy, clicked at OPE_CLICK_RATES."""
    rng = np.random.default_rng(9)
    shown, clicks = [], []
    for i in range(n):
        segment = "warm" if i % 3 else "cold"
        strategy = ("two_tower", "popularity")[int(rng.integers(2))]
        rec = f"ope-{i}"
        shown.append(Impression(rec, f"u{i}", segment, strategy, "v1", ("1", "2"), 0.5, when))
        if rng.random() < OPE_CLICK_RATES[(segment, strategy)]:
            clicks.append(event_row(f"u{i}", "2", "click", when, rec))
    with db.transaction():
        insert_events(db, clicks)
        record_feedback(db, shown, [c.recommendation_id for c in clicks])


def with_query(event: dict[str, Any], query: str) -> dict[str, Any]:
    return event | {"rawQueryString": query, "queryStringParameters": dict(p.split("=", 1) for p in query.split("&"))}


def test_ope_estimates_a_segment_policy_within_its_intervals(admin: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN 3000 impressions of two hours ago, strategies chosen uniformly, clicks at known rates
    log_uniform_impressions(db, 3000, datetime.now(UTC) - timedelta(hours=2))
    # WHEN an operator asks how "two_tower for warm users, popularity for cold ones" would have done
    status, body = call(admin, load_event("admin_ope.json"))
    # THEN IPS, SNIPS and DR each cover the true value (2/3 x 0.30 + 1/3 x 0.20 clicks at a click's reward)
    truth = (2 / 3 * 0.30 + 1 / 3 * 0.20) * EVENT_TYPES["click"].reward
    assert status == 200, body
    assert (body["decisions"], body["unsupported_mass"]) == (3000, 0.0)
    assert body["policy"] == {"segments": {"warm": {"two_tower": 1.0}, "cold": {"popularity": 1.0}}, "default": None}
    assert [e["estimator"] for e in body["estimates"]] == ["ips", "snips", "dr"]
    for estimate in body["estimates"]:
        assert estimate["low"] <= truth <= estimate["high"] and estimate["high"] - estimate["low"] < 0.1, estimate


def test_ope_of_thompson_evaluates_the_bandits_current_choice(admin: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN the same logs, which also fed the strategy bandit's counters
    log_uniform_impressions(db, 3000, datetime.now(UTC) - timedelta(hours=2))
    choice = current_probabilities(read_arms(db))
    # WHEN the Thompson policy as it stands is evaluated
    status, body = call(admin, with_query(load_event("admin_ope.json"), "policy=thompson"))
    # THEN its target is the posterior's choice per segment, and every interval covers that policy's value
    assert status == 200, body
    assert body["policy"]["segments"] == choice
    share = {"warm": 2 / 3, "cold": 1 / 3}
    truth = sum(share[seg] * p * OPE_CLICK_RATES[(seg, s)] for seg, mix in choice.items() for s, p in mix.items())
    assert choice["warm"]["two_tower"] > 0.9 and choice["cold"]["popularity"] > 0.9
    for estimate in body["estimates"]:
        assert estimate["low"] <= truth * EVENT_TYPES["click"].reward <= estimate["high"], estimate


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("policy=two_tower&days=7", "no impressions logged"),
        ("policy=two_tower%3Dmuch", "must be numbers"),
        ("policy=thompson", "no counters yet"),
        ("policy=two_tower&since=2026-11-30T00:00:00Z&until=2026-11-29T00:00:00Z", "the window is empty"),
        ("days=7", "policy"),
    ],
)
def test_ope_explains_what_it_cannot_evaluate(admin: ModuleType, db_url: str, query: str, message: str) -> None:
    # GIVEN no impressions WHEN asked THEN a 422 says why
    status, body = call(admin, with_query(load_event("admin_ope.json"), query))
    assert status == 422 and message in json.dumps(body), body


# --------------------------------------------------------------------------------------- promotions


def promotion_rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    with db.transaction():
        return db.execute("SELECT item_id, mode, position, boost, starts_at, ends_at, note FROM promotions").fetchall()


def test_put_pins_an_item_for_a_window_and_names_the_operator(admin: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN no promotions  WHEN an operator pins item 50 for December (events/admin_promotion_put.json)
    status, body = call(admin, load_event("admin_promotion_put.json"))
    # THEN the row holds the pin and its window, and the response echoes it with the IAM caller
    assert status == 200
    start, end = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 24, tzinfo=UTC)
    assert promotion_rows(db) == [("50", "pin", 1, None, start, end, "holiday banner")]
    assert body["actor"] == OPERATOR
    assert body["promotion"] == {
        "item_id": "50",
        "mode": "pin",
        "position": 1,
        "boost": None,
        "starts_at": "2026-12-01T00:00:00Z",
        "ends_at": "2026-12-24T00:00:00Z",
        "note": "holiday banner",
    }


def test_put_replaces_a_pin_by_a_boost_with_the_cli_default_strength(admin: ModuleType, db: psycopg.Connection) -> None:
    call(admin, load_event("admin_promotion_put.json"))
    # WHEN the same item is boosted without a strength
    status, body = call(admin, with_body(load_event("admin_promotion_put.json"), {"mode": "boost"}))
    # THEN one row remains: a boost of 0.25 (the CLI's default), live now and until removed
    assert status == 200
    assert promotion_rows(db) == [("50", "boost", None, 0.25, None, None, None)]
    assert (body["promotion"]["mode"], body["promotion"]["boost"]) == ("boost", 0.25)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"mode": "pin", "boost": 0.5}, 422, "invalid_request"),  # a pin with a boost
        ({"mode": "boost", "boost": 1.5}, 422, "invalid_request"),  # out of (0, 1]
        ({"mode": "pin", "position": 0}, 422, "invalid_request"),
        ({"mode": "feature"}, 422, "invalid_request"),
        ({"mode": "pin", "colour": "red"}, 422, "invalid_request"),  # unknown field
        ({"mode": "pin", "starts_at": "2026-12-01T00:00:00"}, 422, "invalid_request"),  # no time zone
        (
            {"mode": "pin", "starts_at": "2026-12-24T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"},
            422,
            "invalid_request",
        ),
    ],
)
def test_put_refuses_bad_promotions_and_writes_nothing(
    admin: ModuleType, db: psycopg.Connection, body: dict[str, Any], status: int, code: str
) -> None:
    answer, error = call(admin, with_body(load_event("admin_promotion_put.json"), body))
    assert (answer, error["error"]["code"]) == (status, code)
    assert promotion_rows(db) == []


def test_put_with_a_body_that_is_not_json_or_missing_is_refused(admin: ModuleType, db: psycopg.Connection) -> None:
    event = load_event("admin_promotion_put.json")
    status, body = call(admin, event | {"body": "{mode: pin"})
    assert (status, body["error"]["code"]) == (400, "malformed_request")
    status, body = call(admin, {k: v for k, v in event.items() if k != "body"})
    assert (status, body["error"]["code"]) == (422, "invalid_request")
    assert promotion_rows(db) == []


def test_list_shows_every_promotion_or_only_the_live_ones(admin: ModuleType, db: psycopg.Connection) -> None:
    # GIVEN a pin that starts in the future and a live boost
    call(
        admin,
        with_body(
            load_event("admin_promotion_put.json"), {"mode": "pin", "position": 2, "starts_at": "2999-01-01T00:00:00Z"}
        ),
    )
    call(admin, with_body(routed("admin_promotion_put.json", item_id="181"), {"mode": "boost", "boost": 0.5}))
    # WHEN an operator lists them, all, then only the live ones (events/admin_promotions.json has live=true)
    everything = load_event("admin_promotions.json") | {"rawQueryString": "", "queryStringParameters": None}
    status, body = call(admin, everything)
    assert status == 200
    assert [(p["item_id"], p["mode"], p["position"], p["boost"]) for p in body["promotions"]] == [
        ("50", "pin", 2, None),
        ("181", "boost", None, 0.5),
    ]
    status, body = call(admin, load_event("admin_promotions.json"))
    assert status == 200
    assert [p["item_id"] for p in body["promotions"]] == ["181"]


def test_delete_removes_the_promotion_logs_who_then_answers_404(
    admin: ModuleType, db: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    call(admin, load_event("admin_promotion_put.json"))
    call(admin, with_body(routed("admin_promotion_put.json", item_id="181"), {"mode": "boost"}))
    caplog.clear()
    # WHEN item 50's promotion is deleted
    status, body = call(admin, load_event("admin_promotion_delete.json"))
    # THEN only 181's row is left, the change is logged with the IAM caller; deleting again is a 404
    assert (status, body) == (200, {"removed": "50", "actor": OPERATOR})
    assert f"item 50 no longer promoted (by {OPERATOR})" in caplog.messages
    assert [row[0] for row in promotion_rows(db)] == ["181"]
    status, body = call(admin, load_event("admin_promotion_delete.json"))
    assert (status, body["error"]["code"], body["error"]["details"]) == (404, "not_found", {"item_id": "50"})
    assert [row[0] for row in promotion_rows(db)] == ["181"]
