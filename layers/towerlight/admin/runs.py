"""Retraining runs in Postgres (``retrain_runs``): the idempotency record of the retrain function.

A run is keyed by its execution id: EventBridge Scheduler's ``<aws.scheduler.execution-id>`` (reused by
the scheduler's own retries) or the job id ``POST /admin/retrain`` returns. The retrain function
*claims* the run before training; a second request with the same id gets the recorded run back instead
of training again. A run that failed, or whose worker vanished (``running`` for longer than the
function's timeout), can be claimed again.

Statuses: ``queued`` (accepted by the admin API) → ``running`` → ``succeeded`` (a version was published;
``promoted`` says whether the quality gate let it replace CURRENT), ``skipped`` (not enough data) or
``failed``.

Example::

    >>> owned, run = claim_run(conn, "6f1c…", "schedule", {"window": {...}})
    >>> owned
    True
    >>> finish_run(conn, "6f1c…", "succeeded", version="20261122T011500Z-3fa2c1", promoted=True).status
    'succeeded'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from towerlight.errors import ValidationError

RunStatus = Literal["queued", "running", "succeeded", "skipped", "failed"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "skipped", "failed"})
# Longer than the retrain function's 15-minute timeout: a run "running" for longer has lost its worker.
STALE_AFTER = timedelta(minutes=20)
MAX_EXECUTION_ID_CHARS = 200

_COLUMNS = "execution_id, trigger, status, version, promoted, attempts, requested_at, started_at, finished_at, detail"
_CLAIM = (
    "INSERT INTO retrain_runs AS r (execution_id, trigger, status, attempts, started_at, detail)"
    " VALUES (%(id)s, %(trigger)s, 'running', 1, now(), %(detail)s)"
    " ON CONFLICT (execution_id) DO UPDATE SET status = 'running', attempts = r.attempts + 1,"
    " started_at = now(), finished_at = NULL, detail = r.detail || excluded.detail"
    " WHERE r.status IN ('queued', 'failed')"
    " OR (r.status = 'running' AND r.started_at < now() - %(stale)s::interval)"
    f" RETURNING {_COLUMNS}"
)


@dataclass(frozen=True)
class RetrainRun:
    """One row of ``retrain_runs``."""

    execution_id: str
    trigger: str
    status: str
    version: str | None
    promoted: bool | None
    attempts: int
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    detail: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        """The run as JSON-ready values (times in ISO-8601)."""

        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "execution_id": self.execution_id,
            "trigger": self.trigger,
            "status": self.status,
            "version": self.version,
            "promoted": self.promoted,
            "attempts": self.attempts,
            "requested_at": iso(self.requested_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "detail": self.detail,
        }


def check_execution_id(execution_id: Any) -> str:
    """A usable execution id (non-empty text of at most 200 characters), else ``ValidationError``.

    >>> check_execution_id("c0ffee00-0000-4000-8000-000000000000")
    'c0ffee00-0000-4000-8000-000000000000'
    """
    if (
        not isinstance(execution_id, str)
        or not execution_id.strip()
        or len(execution_id) > MAX_EXECUTION_ID_CHARS
        or "\x00" in execution_id
    ):
        raise ValidationError(
            "execution_id must be a non-empty string of at most 200 characters",
            {"execution_id": execution_id if isinstance(execution_id, str) else repr(execution_id)},
        )
    return execution_id


def _run(row: dict[str, Any]) -> RetrainRun:
    return RetrainRun(**{**row, "detail": dict(row["detail"] or {})})


def record_request(conn: psycopg.Connection, execution_id: str, trigger: str, detail: dict[str, Any]) -> None:
    """Note a requested run as ``queued`` (nothing happens if the run already exists).

    >>> record_request(conn, job_id, "admin", {"requested_by": "arn:aws:iam::123456789012:user/ops"})
    """
    with conn.transaction():
        conn.execute(
            "INSERT INTO retrain_runs (execution_id, trigger, status, detail) VALUES (%s, %s, 'queued', %s)"
            " ON CONFLICT (execution_id) DO NOTHING",
            [check_execution_id(execution_id), trigger, Jsonb(detail)],
        )


def claim_run(
    conn: psycopg.Connection,
    execution_id: str,
    trigger: str,
    detail: dict[str, Any],
    *,
    stale_after: timedelta = STALE_AFTER,
) -> tuple[bool, RetrainRun]:
    """Take ownership of a run: ``(True, run)`` when the caller should train now, else ``(False, run)``.

    The caller owns the run when it is new, ``queued``, ``failed`` before, or ``running`` for longer than
    ``stale_after``. Otherwise the run is finished (its result is final) or in progress elsewhere.
    ``detail`` is merged into the run's detail. One statement, so two concurrent claims never both win.
    """
    params = {"id": check_execution_id(execution_id), "trigger": trigger, "detail": Jsonb(detail)}
    params["stale"] = f"{int(stale_after.total_seconds())} seconds"
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_CLAIM, params).fetchone()
        if row is not None:
            return True, _run(row)
        existing = cur.execute(
            f"SELECT {_COLUMNS} FROM retrain_runs WHERE execution_id = %s", [execution_id]
        ).fetchone()
    if existing is None:  # deleted between the two statements: nothing sensible to return
        raise ValidationError(f"retrain run {execution_id!r} vanished while being claimed")
    return False, _run(existing)


def finish_run(
    conn: psycopg.Connection,
    execution_id: str,
    status: RunStatus,
    *,
    version: str | None = None,
    promoted: bool | None = None,
    detail: dict[str, Any] | None = None,
) -> RetrainRun:
    """Record a run's outcome (``succeeded``, ``skipped`` or ``failed``); ``detail`` is merged in."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"a run finishes as one of {sorted(FINAL_STATUSES)}, not {status!r}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE retrain_runs SET status = %s, version = %s, promoted = %s, finished_at = now(),"
            f" detail = detail || %s WHERE execution_id = %s RETURNING {_COLUMNS}",
            [status, version, promoted, Jsonb(detail or {}), execution_id],
        ).fetchone()
    if row is None:
        raise ValidationError(f"no retrain run {execution_id!r} to finish")
    return _run(row)


def get_run(conn: psycopg.Connection, execution_id: str) -> RetrainRun | None:
    """The run with this execution id, or None."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM retrain_runs WHERE execution_id = %s", [execution_id]).fetchone()
    return _run(row) if row else None


def recent_runs(conn: psycopg.Connection, limit: int = 10) -> list[RetrainRun]:
    """The latest runs, newest request first."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM retrain_runs ORDER BY requested_at DESC, execution_id LIMIT %s", [limit]
        ).fetchall()
    return [_run(row) for row in rows]
