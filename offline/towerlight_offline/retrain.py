"""The retrain job: a window of events from Postgres → the training pipeline → publish → promote if the gate passes.

Runs in the retrain Lambda function (scheduled by EventBridge Scheduler, or asked for by
``POST /admin/retrain``) and anywhere else with ``TOWERLIGHT_STORE`` and a database. One run per
execution id: the run is claimed in ``retrain_runs`` first, so a repeated request (the scheduler's
retries reuse ``<aws.scheduler.execution-id>``) returns the recorded result without training again.

The request (the Lambda event)::

    {"execution_id": "...",                       # required: the idempotency key
     "trigger": "schedule" | "admin" | "manual",  # default "manual"
     "scheduled_time": "2026-11-22T03:00:00Z",    # optional end of the window (default: now)
     "window_days": 90,                           # optional (default TOWERLIGHT_RETRAIN_WINDOW_DAYS)
     "requested_by": "arn:..."}                   # optional, recorded

or ``{"action": "migrate"}`` to only apply pending schema migrations (for a database only the
functions' VPC reaches). The window is ``[until - window_days, until)``; with the scheduled time as
``until``, a retried run reads exactly the same events.

Example::

    >>> run_retrain({"execution_id": "c0ffee", "trigger": "manual"})
    {'execution_id': 'c0ffee', 'status': 'succeeded', 'version': '20261122T031502Z-0a1b2c', 'promoted': True, ...}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from towerlight.admin import runs
from towerlight.config import env_number, get_settings
from towerlight.db.connection import connect
from towerlight.db.migrate import migrate
from towerlight.errors import ValidationError
from towerlight_offline.data.dataset import Dataset
from towerlight_offline.data.sources import dataset_from_postgres
from towerlight_offline.model.train import TwoTowerParams
from towerlight_offline.pipeline import TrainConfig, TrainResult, positive_interactions, run_training

logger = logging.getLogger(__name__)

TRIGGERS = ("schedule", "admin", "manual")
# Reading the window and writing run records can take longer than serving's 200 ms statement timeout.
STATEMENT_TIMEOUT_MS = 600_000


@dataclass(frozen=True)
class RetrainSettings:
    """How scheduled runs train, from ``TOWERLIGHT_RETRAIN_*`` variables (template.yaml sets the first two)."""

    window_days: int = 90
    keep_versions: int = 5
    min_interactions: int = 100  # fewer positive events in the window: the run is skipped
    epochs: int | None = None  # None: the pipeline's default
    max_eval_users: int | None = 5000  # bounds evaluation time inside the 15-minute Lambda limit
    baselines: bool = True

    @classmethod
    def from_env(cls) -> RetrainSettings:
        """Read and validate the settings (``TOWERLIGHT_RETRAIN_EPOCHS=0`` means the default)."""
        epochs = int(env_number("TOWERLIGHT_RETRAIN_EPOCHS", 0, 0))
        max_eval = int(env_number("TOWERLIGHT_RETRAIN_MAX_EVAL_USERS", 5000, 0))
        return cls(
            window_days=int(env_number("TOWERLIGHT_RETRAIN_WINDOW_DAYS", 90, 1)),
            keep_versions=int(env_number("TOWERLIGHT_RETRAIN_KEEP_VERSIONS", 5, 2)),
            min_interactions=int(env_number("TOWERLIGHT_RETRAIN_MIN_INTERACTIONS", 100, 1)),
            epochs=epochs or None,
            max_eval_users=max_eval or None,
            baselines=os.environ.get("TOWERLIGHT_RETRAIN_BASELINES", "true").lower() not in ("0", "false", "no"),
        )


@dataclass(frozen=True)
class RetrainRequest:
    """One validated retraining request."""

    execution_id: str
    trigger: str
    since: datetime
    until: datetime
    requested_by: str | None = None

    @classmethod
    def from_event(
        cls, event: Mapping[str, Any], settings: RetrainSettings, now: datetime | None = None
    ) -> RetrainRequest:
        """Validate a Lambda event (see the module docstring); ``ValidationError`` names the problem."""
        if not isinstance(event, Mapping):
            raise ValidationError("the retrain event must be a JSON object")
        execution_id = runs.check_execution_id(event.get("execution_id"))
        trigger = event.get("trigger") or "manual"
        if trigger not in TRIGGERS:
            raise ValidationError(f"trigger must be one of {', '.join(TRIGGERS)}", {"trigger": trigger})
        until = _parse_time(event.get("scheduled_time")) or (now or datetime.now(UTC))
        window_days = event.get("window_days", settings.window_days)
        if isinstance(window_days, bool) or not isinstance(window_days, int) or not 1 <= window_days <= 3650:
            raise ValidationError("window_days must be an integer in 1..3650", {"window_days": window_days})
        requested_by = event.get("requested_by")
        return cls(
            execution_id=execution_id,
            trigger=trigger,
            since=until - timedelta(days=window_days),
            until=until,
            requested_by=requested_by if isinstance(requested_by, str) else None,
        )

    def window(self) -> dict[str, str]:
        return {"since": _iso(self.since), "until": _iso(self.until)}

    def source(self) -> str:
        """The manifest's ``data.source``: where the events came from and which run trained on them."""
        return (
            f"postgres events [{_iso(self.since)}, {_iso(self.until)}) "
            f"by retrain run {self.execution_id} ({self.trigger})"
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError("scheduled_time must be ISO-8601", {"scheduled_time": value}) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


Trainer = Callable[[Dataset, TrainConfig], TrainResult]


def _train(dataset: Dataset, config: TrainConfig) -> TrainResult:
    return run_training(dataset, config, progress=False)


def train_config(request: RetrainRequest, settings: RetrainSettings) -> TrainConfig:
    """The pipeline's configuration for one run (promotion on: the quality gate decides)."""
    params = TwoTowerParams(epochs=settings.epochs) if settings.epochs else TwoTowerParams()
    return TrainConfig(
        source=request.source(),
        store_uri=get_settings().require_store(),
        two_tower=params,
        baselines=settings.baselines,
        keep_versions=settings.keep_versions,
        max_eval_users=settings.max_eval_users,
        promote=True,
    )


def _summary(run: runs.RetrainRun, **extra: Any) -> dict[str, Any]:
    return {**run.to_json(), **extra}


def run_retrain(
    event: Mapping[str, Any],
    *,
    settings: RetrainSettings | None = None,
    train: Trainer = _train,
    connection: Callable[[], psycopg.Connection] | None = None,
) -> dict[str, Any]:
    """Run (or report) the retraining run the event asks for; returns the run record as JSON.

    A run already finished, or running elsewhere, is returned with ``"duplicate": true`` and nothing is
    trained. A failure is recorded as ``failed`` and re-raised (Lambda's async retry or its on-failure
    destination takes over; a retry may claim the failed run again).
    """
    open_connection = connection or (lambda: connect(timeout_ms=STATEMENT_TIMEOUT_MS))
    if isinstance(event, Mapping) and event.get("action") == "migrate":
        with open_connection() as conn:
            applied = migrate(conn)
        logger.info("schema migrations applied: %s", applied or "none pending")
        return {"action": "migrate", "applied": applied}

    settings = settings or RetrainSettings.from_env()
    request = RetrainRequest.from_event(event, settings)
    detail = {"window": request.window(), "requested_by": request.requested_by}
    # Short-lived connections: training can outlast a NAT's or the server's idle timeout.
    with open_connection() as conn:
        migrate(conn)
        owned, run = runs.claim_run(conn, request.execution_id, request.trigger, detail)
        if not owned:
            logger.info("retrain run %s is %s already: not training again", run.execution_id, run.status)
            return _summary(run, duplicate=True)
        logger.info("retrain run %s claimed (attempt %d), window %s", run.execution_id, run.attempts, detail["window"])
        try:
            dataset = dataset_from_postgres(conn, request.since, request.until)
            conn.commit()  # end the read's transaction: no snapshot held open while training
        except Exception as exc:
            conn.rollback()
            runs.finish_run(conn, request.execution_id, "failed", detail={"error": _error(exc)})
            raise

    positives = len(positive_interactions(dataset.interactions))
    if positives < settings.min_interactions:
        reason = f"{positives} positive events in the window, fewer than the {settings.min_interactions} needed"
        logger.warning("retrain run %s skipped: %s", request.execution_id, reason)
        with open_connection() as conn:
            run = runs.finish_run(conn, request.execution_id, "skipped", detail={"reason": reason})
        return _summary(run, duplicate=False)

    logger.info("retrain run %s: training on %s", request.execution_id, dataset.summary())
    try:
        result = train(dataset, train_config(request, settings))
    except Exception as exc:
        logger.exception("retrain run %s failed", request.execution_id)
        with open_connection() as conn:
            runs.finish_run(conn, request.execution_id, "failed", detail={"error": _error(exc)})
        raise
    outcome = {
        "outcome": result.outcome,
        "gate": result.decision.to_json(),
        "metrics": result.manifest.get("metrics", {}).get("two_tower"),
        "data": result.manifest.get("data"),
        "timings": result.timings,
        "pruned": result.pruned,
        "store": result.store_uri,
    }
    logger.info("retrain run %s published %s: %s", request.execution_id, result.version, result.outcome)
    with open_connection() as conn:
        run = runs.finish_run(
            conn,
            request.execution_id,
            "succeeded",
            version=result.version,
            promoted=result.promoted,
            detail=outcome,
        )
    return _summary(run, duplicate=False)


def _error(exc: BaseException) -> dict[str, str]:
    message = getattr(exc, "message", None) or str(exc)
    return {"type": type(exc).__name__, "message": message[:2000]}
