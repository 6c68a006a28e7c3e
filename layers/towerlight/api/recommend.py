"""The recommend HTTP API: ``GET /recommendations/{user_id}``, ``POST /rank``, ``GET /items/{item_id}/similar``.

Routes are ``async`` on purpose: they never wait on anything slow (one short query, microseconds of
numpy), and running on the event loop saves the thread-pool hop a sync route costs on every request.
With ``metrics`` (Powertools ``Metrics``), each request records its latency, the model version (as
metadata) and one ``Fallback_<reason>`` count per degradation taken.

Example::

    >>> handler = Mangum(create_recommend_app(metrics=Metrics()), lifespan="off")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse

from towerlight.api.base import create_app
from towerlight.config import get_settings
from towerlight.impressions import send_impressions
from towerlight.recommend.schemas import (
    ERROR_RESPONSES,
    MAX_K,
    RankRequest,
    RankResponse,
    RecommendationsParams,
    RecommendationsResponse,
    SimilarItemsResponse,
    hybrid_weights,
    rank_items,
    split_values,
)
from towerlight.recommend.service import Recommendations, RecommendationService, RecommendQuery, get_service

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics


def _record(metrics: Metrics | None, route: str, started: float, model_version: str, fallbacks: Sequence[str]) -> None:
    if metrics is None:
        return
    metrics.add_dimension(name="route", value=route)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000)
    metrics.add_metadata(key="model_version", value=model_version)
    for reason in fallbacks:
        metrics.add_metric(name=f"Fallback_{reason}", unit=MetricUnit.Count, value=1)


def _log_impression(metrics: Metrics | None, result: Recommendations) -> None:
    """Send what was shown to the events queue, when there is one: ingest stores it for the bandit."""
    queue_url = get_settings().events_queue_url
    if queue_url is None:
        return
    not_sent = send_impressions(queue_url, [result.impression(datetime.now(UTC))])
    if not_sent and metrics is not None:
        metrics.add_metric(name="ImpressionsNotSent", unit=MetricUnit.Count, value=not_sent)


def create_recommend_app(
    *, service: Callable[[], RecommendationService] = get_service, metrics: Metrics | None = None
) -> FastAPI:
    """The recommend FastAPI app (error contract and /health from ``create_app``).

    ``service`` returns the ``RecommendationService`` to call (created on first request by default);
    ``metrics`` is a Powertools ``Metrics`` or None.

    >>> app = create_recommend_app()
    """
    app = create_app("recommend")

    @app.get(
        "/recommendations/{user_id}",
        response_model=RecommendationsResponse,
        responses=ERROR_RESPONSES,
        tags=["recommendations"],
        openapi_extra={"parameters": RecommendationsParams.openapi_parameters()},
    )
    async def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=256)], request: Request
    ) -> JSONResponse:
        started = time.perf_counter()
        params = RecommendationsParams.from_query(request.query_params)
        query = RecommendQuery(
            k=params.k,
            strategy=params.strategy,
            exclude_seen=params.exclude_seen,
            exclude=split_values(params.exclude, name="exclude"),
            categories=split_values(params.category, name="category"),
            exclude_categories=split_values(params.exclude_category, name="exclude_category"),
            strict=params.strict,
            weights=hybrid_weights(params.strategy, params.weights),
            max_per_category=params.max_per_category,
            explain=params.explain,
        )
        recommender = service()
        result = recommender.recommend(user_id, query)
        # Only the service's own decisions (not a caller's explicit strategy), and only when something
        # learns from them: sending costs the request a round trip to SQS.
        if params.strategy == "auto" and recommender.learns_online:
            _log_impression(metrics, result)
        _record(metrics, "recommendations", started, result.model_version, result.fallbacks)
        return JSONResponse(result.to_json())

    @app.post("/rank", response_model=RankResponse, responses=ERROR_RESPONSES, tags=["recommendations"])
    async def rank(request: RankRequest) -> JSONResponse:
        started = time.perf_counter()
        result = service().rank(
            request.user_id,
            rank_items(request),
            request.strategy,
            weights=hybrid_weights(request.strategy, request.weights),
            explain=request.explain,
        )
        _record(metrics, "rank", started, result.model_version, result.fallbacks)
        return JSONResponse(result.to_json())

    @app.get(
        "/items/{item_id}/similar",
        response_model=SimilarItemsResponse,
        responses=ERROR_RESPONSES,
        tags=["recommendations"],
    )
    async def similar_items(
        item_id: Annotated[str, Path(min_length=1, max_length=256)],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="number of items")] = 10,
    ) -> JSONResponse:
        started = time.perf_counter()
        result = service().similar_items(item_id, k)
        _record(metrics, "similar_items", started, result.model_version, result.fallbacks)
        return JSONResponse(result.to_json())

    return app
