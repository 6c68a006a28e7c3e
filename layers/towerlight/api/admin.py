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
- ``GET /admin/stats/online?days=30``: the strategy bandit's arms, each experiment variant's CTR and conversion,
  item exploration's VW model and its explored vs exploited rewards;
- ``GET /admin/ope?policy=warm:two_tower&policy=cold:popularity&days=30`` (or ``policy=thompson``; optional
  ``since``/``until``, ``settle_minutes``, ``confidence``): IPS, SNIPS and doubly robust estimates of that
  strategy policy's reward per impression, with normal confidence intervals (``towerlight.admin.ope``);
- ``GET /admin/promotions?live=false``: pinned and boosted items; ``PUT /admin/promotions/{item_id}``
  (``{"mode": "pin"|"boost", "position"?, "boost"?, "starts_at"?, "ends_at"?, "note"?}``): create or
  replace, 200 with the saved promotion; ``DELETE /admin/promotions/{item_id}``: 404 when not promoted;
- ``GET /health``.

Who called is read from the IAM authorizer context API Gateway adds (``requestContext.authorizer.iam``),
logged on every change and recorded with retraining requests.

Example::

    app = create_admin_app()  # then Mangum(app, lifespan="off") in functions/admin/app.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

import psycopg
from fastapi import Body, FastAPI, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from towerlight.admin import online, ope, promotions, service, stats
from towerlight.api.base import create_app
from towerlight.config import get_settings
from towerlight.db.connection import shared_connection
from towerlight.db.promotions import DEFAULT_BOOST, DEFAULT_PIN_POSITION, Promotion
from towerlight.store import ArtifactStore, open_store

# Stats scan a window of events: allow far more than serving's 200 ms, within the 29 s function timeout.
ADMIN_STATEMENT_TIMEOUT_MS = 20_000
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ItemId = Annotated[str, Path(min_length=1, max_length=256)]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_current: str | None = Field(
        default=None, description="promote only if CURRENT still names this version (compare-and-swap)"
    )


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_days: int | None = Field(default=None, ge=1, le=3650, description="days of events to train on")


class PromotionRequest(BaseModel):
    """The body of ``PUT /admin/promotions/{item_id}``; ``Promotion`` checks the values (HTTP 422)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["pin", "boost"]
    position: int | None = Field(
        default=None, description=f"pin: 1-based page position (default {DEFAULT_PIN_POSITION})"
    )
    boost: float | None = Field(
        default=None, description=f"boost: 0 < boost <= 1, 1 puts it first (default {DEFAULT_BOOST})"
    )
    starts_at: AwareDatetime | None = Field(default=None, description="ISO-8601 with a time zone (default: live now)")
    ends_at: AwareDatetime | None = Field(
        default=None, description="ISO-8601 with a time zone (default: until removed)"
    )
    note: str | None = Field(default=None, max_length=1000, description="why, for the next operator")

    def promotion(self, item_id: str) -> Promotion:
        """The promotion of ``item_id`` this body asks for, with the CLI's defaults."""
        pin, boost = self.mode == "pin", self.mode == "boost"
        return Promotion(
            item_id,
            self.mode,
            position=DEFAULT_PIN_POSITION if pin and self.position is None else self.position,
            boost=DEFAULT_BOOST if boost and self.boost is None else self.boost,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            note=self.note,
        )


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

    @app.get(
        "/admin/stats/online",
        tags=["stats"],
        summary="Bandit arms, experiment variants and item exploration, with intervals",
    )
    def online_stats(days: Annotated[int, Query(ge=1, le=stats.MAX_DAYS)] = 30) -> dict[str, Any]:
        return online.online_stats(connection(), days=days, store=store if get_settings().store_uri else None)

    @app.get("/admin/ope", tags=["stats"], summary="Off-policy estimate of a strategy policy on logged impressions")
    def off_policy_estimate(
        policy: Annotated[list[str], Query(min_length=1, description=ope.POLICY_HELP)],
        days: Annotated[float, Query(gt=0, le=stats.MAX_DAYS)] = 30,
        since: Annotated[
            AwareDatetime | None, Query(description="ISO-8601 with a time zone (default: days before until)")
        ] = None,
        until: Annotated[
            AwareDatetime | None, Query(description="ISO-8601 with a time zone (default: now - settle_minutes)")
        ] = None,
        settle_minutes: Annotated[float, Query(ge=0, description="younger impressions may still earn rewards")] = 60,
        confidence: Annotated[float, Query(gt=0, lt=1)] = 0.95,
    ) -> dict[str, Any]:
        window = ope.ope_window(days, settle_minutes, since, until)
        return ope.policy_report(connection(), policy, *window, confidence=confidence)

    @app.get("/admin/promotions", tags=["promotions"], summary="Pinned and boosted items, pins first")
    def list_promotions(
        live: Annotated[bool, Query(description="only those inside their window now")] = False,
    ) -> dict[str, Any]:
        return promotions.promotions(connection(), live_only=live)

    @app.put("/admin/promotions/{item_id}", tags=["promotions"], summary="Pin or boost an item (create or replace)")
    def put_promotion(request: Request, item_id: ItemId, body: Annotated[PromotionRequest, Body()]) -> dict[str, Any]:
        return promotions.save_promotion(connection(), body.promotion(item_id), actor=caller(request))

    @app.delete("/admin/promotions/{item_id}", tags=["promotions"], summary="Stop promoting an item")
    def delete_promotion(request: Request, item_id: ItemId) -> dict[str, Any]:
        return promotions.delete_promotion(connection(), item_id, actor=caller(request))

    return app
