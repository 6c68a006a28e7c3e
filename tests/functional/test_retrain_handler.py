"""The retrain Lambda handler with events/retrain_*.json, on real Postgres and a local artifact store.

One test runs the real pipeline (torch training, ONNX export, index, publish, gate) on a small synthetic
catalogue read back from Postgres; the others replace the pipeline with a recording stand-in, since
what they check is the run record: idempotency per execution id, skips, failures and retries.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import psycopg
import pytest
from conftest import LambdaContext, fresh_handler, load_event

from towerlight.admin import runs
from towerlight.db.catalog import ItemRow, UserRow, upsert_items, upsert_users
from towerlight.db.events import EventRow, insert_events
from towerlight.errors import ValidationError
from towerlight.store import open_store
from towerlight.store.versions import current_version, list_versions, read_manifest
from towerlight_offline import retrain
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.data.synthetic import synthetic_dataset
from towerlight_offline.gate import GateDecision
from towerlight_offline.pipeline import TrainConfig, TrainResult

SCHEDULED = load_event("retrain_scheduled.json")  # scheduled_time 2025-01-15T03:00:00Z
UNTIL = datetime(2025, 1, 15, 3, 0, tzinfo=UTC)
# The synthetic events span 180 days from 2024-01-01: shifted to end a day before the scheduled time.
SHIFT_SECONDS = int((UNTIL - datetime(2024, 6, 30, tzinfo=UTC)).total_seconds()) - 86_400


@pytest.fixture
def fast_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings for a small model: seconds, not minutes."""
    monkeypatch.setenv("TOWERLIGHT_RETRAIN_EPOCHS", "2")
    monkeypatch.setenv("TOWERLIGHT_RETRAIN_BASELINES", "false")
    monkeypatch.setenv("TOWERLIGHT_RETRAIN_MAX_EVAL_USERS", "100")
    monkeypatch.setenv("TOWERLIGHT_RETRAIN_MIN_INTERACTIONS", "100")
    monkeypatch.setenv("TOWERLIGHT_RETRAIN_WINDOW_DAYS", "200")


@pytest.fixture
def retrain_app(monkeypatch: pytest.MonkeyPatch, store_uri: str, fast_training: None) -> ModuleType:
    """functions/retrain/app.py, imported with Powertools configured for tests."""
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TowerlightTest")
    return fresh_handler("retrain")


def store_events(conn: psycopg.Connection, dataset: Dataset) -> int:
    """Write a dataset the way ingest and the importer do; returns the number of events."""
    rows = [
        EventRow(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"{r.user_id}/{r.item_id}/{r.timestamp}/{r.event_type}")),
            r.user_id,
            r.item_id,
            r.event_type,
            None if math.isnan(r.value) else r.value,
            datetime.fromtimestamp(r.timestamp + SHIFT_SECONDS, UTC),
        )
        for r in dataset.interactions.itertuples(index=False)
    ]
    items = [ItemRow(r.item_id, r.title, list(r.categories), dict(r.attributes)) for r in dataset.items.itertuples()]
    with conn.transaction():
        inserted = insert_events(conn, rows)
        upsert_items(conn, items)
        upsert_users(conn, [UserRow(r.user_id, dict(r.attributes)) for r in dataset.users.itertuples()])
    return len(inserted)


@pytest.fixture
def events_in_postgres(db: psycopg.Connection) -> int:
    return store_events(db, synthetic_dataset(n_users=120, n_items=80, n_events=4_000, n_categories=8, seed=3))


class RecordingTrainer:
    """Stands in for ``run_training``: records the dataset and config, returns a fixed outcome."""

    def __init__(self, *, promoted: bool = True, error: Exception | None = None) -> None:
        self.calls: list[tuple[Dataset, TrainConfig]] = []
        self.promoted = promoted
        self.error = error

    def __call__(self, dataset: Dataset, config: TrainConfig, progress: Any = True) -> TrainResult:
        self.calls.append((dataset, config))
        if self.error is not None:
            raise self.error
        version = f"20250115T030500Z-{len(self.calls):06x}"
        reason = "no current version: nothing to compare with" if self.promoted else "ndcg@10 0.1 < 0.2"
        decision = GateDecision(self.promoted, reason, 0.1, None if self.promoted else 0.2, "ndcg@10", 0.01)
        manifest = {"metrics": {"two_tower": {"ndcg@10": 0.1}}, "data": {"source": config.source}}
        outcome = f"{'promoted' if self.promoted else 'not promoted'}: {reason}"
        return TrainResult(version, str(config.store_uri), manifest, {}, decision, self.promoted, outcome, {}, [])


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> RecordingTrainer:
    fake = RecordingTrainer()
    monkeypatch.setattr(retrain, "run_training", fake)
    return fake


def invoke(app: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    return app.handler(event, LambdaContext(function_name="retrain", memory_limit_in_mb=4096))


def event_with(**fields: Any) -> dict[str, Any]:
    return {**SCHEDULED, **fields}


# ------------------------------------------------------------------------------------------- real training


def test_scheduled_run_trains_publishes_promotes_and_a_repeat_does_not_train_again(
    retrain_app: ModuleType,
    store_uri: str,
    events_in_postgres: int,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN events in Postgres and an empty store  WHEN the scheduler's event arrives
    result = invoke(retrain_app, SCHEDULED)
    # THEN a version is published and, with nothing to compare with, promoted
    assert result["status"] == "succeeded" and result["duplicate"] is False
    assert result["promoted"] is True
    store = open_store(store_uri)
    assert current_version(store) == result["version"]
    # AND the manifest says which run trained it on which window
    manifest = read_manifest(store, result["version"])
    source = manifest["data"]["source"]
    assert SCHEDULED["execution_id"] in source and "(schedule)" in source
    assert "2025-01-15T03:00:00Z)" in source
    assert manifest["gate"]["promote"] is True
    # AND the run record holds the outcome
    run = runs.get_run(db, SCHEDULED["execution_id"])
    assert run is not None
    assert (run.status, run.version, run.promoted, run.attempts) == ("succeeded", result["version"], True, 1)
    assert run.detail["outcome"].startswith("promoted")
    assert run.detail["window"] == {"since": "2024-06-29T03:00:00Z", "until": "2025-01-15T03:00:00Z"}

    # WHEN the same execution id arrives again (a scheduler retry), with training now impossible
    monkeypatch.setattr(retrain, "run_training", RecordingTrainer(error=AssertionError("trained twice")))
    again = invoke(retrain_app, SCHEDULED)
    # THEN the first result comes back and nothing new is published
    assert again["duplicate"] is True
    assert (again["status"], again["version"], again["attempts"]) == ("succeeded", result["version"], 1)
    assert [v["version"] for v in list_versions(store)] == [result["version"]]


# ------------------------------------------------------------------------------------------- run records


def test_the_window_ends_at_the_scheduled_time(
    retrain_app: ModuleType, trainer: RecordingTrainer, events_in_postgres: int
) -> None:
    result = invoke(retrain_app, event_with(window_days=30))
    [(dataset, config)] = trainer.calls
    since, until = (UNTIL - timedelta(days=30)).timestamp(), UNTIL.timestamp()
    assert dataset.interactions["timestamp"].between(since, until - 1).all()
    assert 0 < len(dataset.interactions) < events_in_postgres
    assert config.promote is True and config.baselines is False
    assert result["detail"]["window"]["since"] == "2024-12-16T03:00:00Z"


def test_a_gate_that_keeps_the_current_model_is_recorded_as_published_not_promoted(
    retrain_app: ModuleType, trainer: RecordingTrainer, events_in_postgres: int
) -> None:
    trainer.promoted = False
    result = invoke(retrain_app, SCHEDULED)
    assert (result["status"], result["promoted"]) == ("succeeded", False)
    assert result["detail"]["outcome"] == "not promoted: ndcg@10 0.1 < 0.2"
    assert result["detail"]["gate"]["promote"] is False


def test_too_few_events_skip_the_run_without_training(
    retrain_app: ModuleType, trainer: RecordingTrainer, db_url: str, store_uri: str
) -> None:
    result = invoke(retrain_app, SCHEDULED)
    assert result["status"] == "skipped"
    assert "0 positive events" in result["detail"]["reason"]
    assert trainer.calls == []
    assert current_version(open_store(store_uri)) is None


def test_a_failed_run_is_recorded_raised_and_retried_by_the_same_id(
    retrain_app: ModuleType, trainer: RecordingTrainer, events_in_postgres: int, db: psycopg.Connection
) -> None:
    # GIVEN training fails  WHEN the run is invoked  THEN Lambda sees the error and the run says why
    trainer.error = RuntimeError("out of memory")
    with pytest.raises(RuntimeError, match="out of memory"):
        invoke(retrain_app, SCHEDULED)
    run = runs.get_run(db, SCHEDULED["execution_id"])
    assert run is not None and run.status == "failed"
    assert run.detail["error"] == {"type": "RuntimeError", "message": "out of memory"}
    # WHEN Lambda's async retry delivers the same event  THEN it trains again, as attempt 2
    trainer.error = None
    result = invoke(retrain_app, SCHEDULED)
    assert (result["status"], result["attempts"], result["duplicate"]) == ("succeeded", 2, False)
    assert len(trainer.calls) == 2


def test_a_run_in_progress_elsewhere_is_not_started_twice_unless_it_went_stale(
    retrain_app: ModuleType, trainer: RecordingTrainer, events_in_postgres: int, db: psycopg.Connection
) -> None:
    # GIVEN another worker claimed the run a moment ago
    runs.claim_run(db, SCHEDULED["execution_id"], "schedule", {})
    result = invoke(retrain_app, SCHEDULED)
    assert (result["status"], result["duplicate"]) == ("running", True)
    assert trainer.calls == []
    # GIVEN that worker vanished (running for longer than the function's timeout)
    with db.transaction():
        db.execute(
            "UPDATE retrain_runs SET started_at = now() - interval '1 hour' WHERE execution_id = %s",
            [SCHEDULED["execution_id"]],
        )
    result = invoke(retrain_app, SCHEDULED)
    assert (result["status"], result["attempts"], result["duplicate"]) == ("succeeded", 2, False)


def test_an_admin_job_queued_by_the_api_is_picked_up_under_its_job_id(
    retrain_app: ModuleType, trainer: RecordingTrainer, events_in_postgres: int, db: psycopg.Connection
) -> None:
    event = load_event("retrain_admin.json")
    runs.record_request(db, event["execution_id"], "admin", {"requested_by": event["requested_by"]})
    result = invoke(retrain_app, event | {"scheduled_time": SCHEDULED["scheduled_time"]})
    assert (result["status"], result["trigger"], result["attempts"]) == ("succeeded", "admin", 1)
    assert result["detail"]["requested_by"] == event["requested_by"]
    [(_, config)] = trainer.calls
    assert "(admin)" in config.source


@pytest.mark.parametrize(
    "event",
    [
        {"trigger": "schedule"},
        {"execution_id": "", "trigger": "schedule"},
        {"execution_id": "x", "trigger": "cron"},
        {"execution_id": "x", "window_days": 0},
        {"execution_id": "x", "scheduled_time": "yesterday"},
    ],
)
def test_malformed_events_fail_before_anything_is_recorded(
    retrain_app: ModuleType, trainer: RecordingTrainer, db: psycopg.Connection, event: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        invoke(retrain_app, event)
    assert runs.recent_runs(db) == []
    assert trainer.calls == []


def test_the_migrate_action_applies_pending_migrations_only(retrain_app: ModuleType, db_url: str) -> None:
    result = invoke(retrain_app, load_event("retrain_migrate.json"))
    assert result == {"action": "migrate", "applied": []}  # the fixture already migrated
