"""What the admin API does: model status, promote, rollback, and asking the retrain function for a run.

Everything here takes its collaborators (store, database connection, Lambda client) as arguments, so
the HTTP layer (``towerlight.api.admin``) only wires them, and tests pass local stand-ins.

Example::

    >>> store = open_store("file:///tmp/towerlight-store")
    >>> model_status(store)["current"]["version"]
    '20261122T011500Z-3fa2c1'
    >>> promote_version(store, "20261121T011500Z-99aa01", actor="arn:aws:iam::123456789012:user/ops")
    {'current': {'version': '20261121T011500Z-99aa01', 'previous': '20261122T011500Z-3fa2c1', ...}, ...}
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from towerlight.admin import runs
from towerlight.errors import (
    ConfigurationError,
    NotFoundError,
    PointerConflictError,
    ServiceUnavailableError,
    TowerlightError,
)
from towerlight.store import ArtifactNotFoundError, ArtifactStore
from towerlight.store.versions import list_versions, promote, read_manifest, read_pointer, rollback

logger = logging.getLogger(__name__)

RETRAIN_TRIGGER = "admin"


class NothingToRollBackError(PointerConflictError):
    """Nothing is promoted yet, or no older version exists (HTTP 409)."""

    code = "nothing_to_roll_back"


class RetrainUnavailableError(ServiceUnavailableError):
    """The retrain function could not be invoked (HTTP 503, like any unavailable dependency)."""

    code = "retrain_unavailable"


Invoker = Callable[[str, dict[str, Any]], None]
"""Invokes a function asynchronously: ``invoke(function_name, payload)``; raises on failure."""


def model_status(store: ArtifactStore) -> dict[str, Any]:
    """``CURRENT``, the current version's manifest and metrics table, and every complete version.

    Before the first promote, ``current``, ``manifest`` and ``metrics`` are None.
    """
    pointer, _ = read_pointer(store)
    manifest = read_manifest(store, pointer["version"]) if pointer else None
    return {
        "store": store.uri,
        "current": pointer,
        "manifest": manifest,
        "metrics": manifest.get("metrics") if manifest else None,
        "versions": list_versions(store),
    }


def promote_version(
    store: ArtifactStore, version: str, *, expected_current: str | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Point ``CURRENT`` at ``version``; with ``expected_current``, only if that is still the current one.

    Raises ``NotFoundError`` for a version that is not published (or incomplete), and
    ``PointerConflictError`` when ``CURRENT`` moved. Warm functions serve it within MODEL_REFRESH_SECONDS.
    """
    try:
        if expected_current is None:
            pointer = promote(store, version)
        else:
            pointer = promote(store, version, expected_current=expected_current)
    except ArtifactNotFoundError as exc:
        raise NotFoundError(f"model version {version!r} is not published", {"version": version}) from exc
    logger.warning("promoted model %s (by %s)", version, actor or "unknown")
    return {"current": pointer, "actor": actor}


def rollback_model(store: ArtifactStore, *, actor: str | None = None) -> dict[str, Any]:
    """Point ``CURRENT`` back at the previous version (a second rollback goes further back).

    Raises ``NothingToRollBackError`` when nothing is promoted or no other version is left.
    """
    before, _ = read_pointer(store)
    if before is None:
        raise NothingToRollBackError("nothing is promoted yet, so there is nothing to roll back")
    versions = [entry["version"] for entry in list_versions(store)]
    current = before["version"]
    older = versions[versions.index(current) + 1 :] if current in versions else []
    previous = before.get("previous")
    if not older and (previous not in versions or previous == current):
        raise NothingToRollBackError(f"no version older than {current!r} to roll back to", {"current": current})
    pointer = rollback(store)
    logger.warning("rolled back model from %s to %s (by %s)", current, pointer["version"], actor)
    return {"current": pointer, "rolled_back_from": current, "actor": actor}


@functools.lru_cache(maxsize=1)
def _lambda_client() -> Any:
    import boto3  # deferred: only POST /admin/retrain needs it
    from botocore.config import Config

    from towerlight.config import region

    config = Config(region_name=region(), retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
    return boto3.session.Session().client("lambda", config=config)


def invoke_async(function_name: str, payload: dict[str, Any]) -> None:
    """Invoke a Lambda function asynchronously (``InvocationType=Event``); raises ``RetrainUnavailableError``."""
    try:
        response = _lambda_client().invoke(
            FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode()
        )
    except Exception as exc:  # botocore raises many unrelated types; all mean "not invoked"
        raise RetrainUnavailableError(f"cannot invoke {function_name}: {exc}", {"function": function_name}) from exc
    if response.get("StatusCode") != 202:
        raise RetrainUnavailableError(
            f"invoking {function_name} returned status {response.get('StatusCode')}", {"function": function_name}
        )


def request_retrain(
    function_name: str | None,
    *,
    window_days: int | None = None,
    actor: str | None = None,
    invoke: Invoker = invoke_async,
    conn_factory: Callable[[], psycopg.Connection] | None = None,
) -> dict[str, Any]:
    """Start a retraining run in the background; returns ``{"job_id", "status": "queued", ...}``.

    The job id is the run's execution id (its idempotency key): ``GET /admin/retrain/{job_id}`` reads
    the run from ``retrain_runs``. When ``conn_factory`` is given the run is recorded as ``queued``
    first-come (a database error is logged, not raised: the run is already on its way).
    """
    if not function_name:
        raise ConfigurationError("RETRAIN_FUNCTION_NAME is not set: this deployment cannot retrain")
    job_id = str(uuid.uuid4())
    payload: dict[str, Any] = {"execution_id": job_id, "trigger": RETRAIN_TRIGGER, "requested_by": actor}
    if window_days is not None:
        payload["window_days"] = window_days
    invoke(function_name, payload)
    logger.info("requested retraining %s from %s (by %s)", job_id, function_name, actor)
    if conn_factory is not None:
        try:
            runs.record_request(conn_factory(), job_id, RETRAIN_TRIGGER, {"requested_by": actor, "request": payload})
        except (TowerlightError, psycopg.Error) as exc:
            logger.warning("could not record retraining %s as queued: %s", job_id, exc)
    return {"job_id": job_id, "status": "queued", "function": function_name, "request": payload}


def retrain_job(conn: psycopg.Connection, job_id: str) -> dict[str, Any]:
    """A retraining run by its job (execution) id; ``NotFoundError`` if unknown."""
    run = runs.get_run(conn, runs.check_execution_id(job_id))
    if run is None:
        raise NotFoundError(f"no retraining run {job_id!r}", {"job_id": job_id})
    return run.to_json()
