"""The admin HTTP API (``/admin/*``, behind AWS_IAM auth in API Gateway): operate models and read stats.

Routes (errors use the shared ``{"error": {code, message, details?}}`` body):

- ``GET /admin/model``: ``CURRENT``, the current manifest and its metrics table, every complete version;
- ``POST /admin/models/{version}/promote`` (body optional: ``{"expected_current": "..."}``): 200 with the
  new pointer; 404 unknown version, 409 ``CURRENT`` moved;
- ``POST /admin/rollback``: 200 with the new pointer; 409 when there is nothing to roll back to;
- ``POST /admin/retrain`` (body optional: ``{"window_days": n}``): 202 ``{"job_id", "status": "queued"}``,
  the retrain function invoked asynchronously; ``GET /admin/retrain/{job_id}``: that run's record;
- ``GET /admin/stats?days=30&top=20``: events per type and day, CTR, popular items;
- ``GET /admin/stats/users/{user_id}``: one user's counts, latest events, removed items;
- ``GET /admin/stats/online?days=30``: the strategy bandit's arms, each experiment variant's CTR and conversion;
- ``GET /health``.

Who called is read from the IAM authorizer context API Gateway adds (``requestContext.authorizer.iam``),
logged on every change and recorded with retraining requests.

Example::

    app = create_admin_app()  # then Mangum(app, lifespan="off") in functions/admin/app.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any

import psycopg
from fastapi import Body, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from towerlight.admin import online, service, stats
from towerlight.api.base import create_app
from towerlight.config import get_settings
from towerlight.db.connection import shared_connection
from towerlight.store import ArtifactStore, open_store

# Stats scan a window of events: allow far more than serving's 200 ms, within the 29 s function timeout.
ADMIN_STATEMENT_TIMEOUT_MS = 20_000
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_current: str | None = Field(
        default=None, description="promote only if CURRENT still names this version (compare-and-swap)"
    )


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_days: int | None = Field(default=None, ge=1, le=3650, description="days of events to train on")


def default_store() -> ArtifactStore:
    """The store ``TOWERLIGHT_STORE`` names."""
    return open_store(get_settings().require_store())


def default_connection() -> psycopg.Connection:
    """The per-process Postgres connection, with the admin statement timeout."""
    return shared_connection(timeout_ms=ADMIN_STATEMENT_TIMEOUT_MS)


def caller(request: Request) -> str | None:
    """The IAM principal API Gateway authorized (``userArn``), or None outside API Gateway."""
    event = request.scope.get("aws.event") or {}
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    return iam.get("userArn") or iam.get("callerId")


def create_admin_app(
    *,
    store: Callable[[], ArtifactStore] = default_store,
    connection: Callable[[], psycopg.Connection] = default_connection,
    invoke: service.Invoker = service.invoke_async,
    retrain_function: Callable[[], str | None] = lambda: os.environ.get("RETRAIN_FUNCTION_NAME"),
) -> FastAPI:
    """The admin FastAPI app; each collaborator is a factory called per request (tests pass their own).

    Example::

        >>> handler = Mangum(create_admin_app(), lifespan="off")
    """
    app = create_app("admin")

    @app.get("/admin/model", tags=["models"], summary="Current model, its metrics, and every version")
    def model_status() -> dict[str, Any]:
        return service.model_status(store())

    @app.post("/admin/models/{version}/promote", tags=["models"], summary="Serve this version")
    def promote(
        request: Request,
        version: Annotated[str, Path(pattern=VERSION_PATTERN)],
        body: Annotated[PromoteRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        expected = body.expected_current if body else None
        return service.promote_version(store(), version, expected_current=expected, actor=caller(request))

    @app.post("/admin/rollback", tags=["models"], summary="Serve the previous version again")
    def rollback(request: Request) -> dict[str, Any]:
        return service.rollback_model(store(), actor=caller(request))

    @app.post("/admin/retrain", status_code=202, tags=["retraining"], summary="Retrain now, in the background")
    def retrain(request: Request, body: Annotated[RetrainRequest | None, Body()] = None) -> dict[str, Any]:
        return service.request_retrain(
            retrain_function(),
            window_days=body.window_days if body else None,
            actor=caller(request),
            invoke=invoke,
            conn_factory=connection,
        )

    @app.get("/admin/retrain/{job_id}", tags=["retraining"], summary="A retraining run by job id")
    def retrain_job(job_id: Annotated[str, Path(min_length=1, max_length=200)]) -> dict[str, Any]:
        return service.retrain_job(connection(), job_id)

    @app.get("/admin/stats", tags=["stats"], summary="Events per type and day, CTR, popular items")
    def event_stats(
        days: Annotated[int, Query(ge=1, le=stats.MAX_DAYS)] = 30,
        top: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        return stats.event_stats(connection(), days=days, top=top)

    @app.get("/admin/stats/users/{user_id}", tags=["stats"], summary="One user's activity")
    def user_stats(
        user_id: Annotated[str, Path(min_length=1, max_length=128)],
        recent: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        return stats.user_stats(connection(), user_id, recent=recent)

    @app.get("/admin/stats/online", tags=["stats"], summary="Bandit arms and experiment variants, with intervals")
    def online_stats(days: Annotated[int, Query(ge=1, le=stats.MAX_DAYS)] = 30) -> dict[str, Any]:
        return online.online_stats(connection(), days=days)

    return app
