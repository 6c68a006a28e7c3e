"""The track HTTP API: ``POST /events`` validates interaction events and enqueues them to SQS.

Responses (errors use the shared ``{"error": {code, message, details?}}`` body):

- 202 ``{"accepted": n, "event_ids": [...]}``: every event is in the queue (ids in request order);
- 400 the body is not JSON; 413 over 256 KB or over 100 events; 422 any event is invalid (the
  details list each problem, e.g. ``events.3.user_id``); nothing was enqueued in these cases;
- 503 ``queue_unavailable``: some events were still not enqueued after retries; ``details.accepted``
  and ``details.failed`` (index, event_id, reason) say exactly which. Resend the failed ones with the
  same ``event_id``: ingest stores each id once, so resending the whole request is safe as well.

Example::

    app = create_track_app(metrics=metrics)  # then Mangum(app, lifespan="off") in functions/track/app.py
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from towerlight.api.base import create_app
from towerlight.errors import QueueError, TowerlightError
from towerlight.recommend.schemas import ErrorResponse
from towerlight.tracking import (
    MAX_EVENTS_PER_REQUEST,
    InteractionEvent,
    MetricsSink,
    decode_track_body,
    enqueue_events,
    validate_events,
)


class TrackResponse(BaseModel):
    accepted: int
    event_ids: list[str]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "the body is not JSON"),
        (413, "the body is over 256 KB or carries over 100 events"),
        (422, "an event is invalid (details locate each problem); nothing was enqueued"),
        (503, "some events were not enqueued: details.accepted and details.failed say which"),
    )
}


def _request_body_schema() -> dict[str, Any]:
    # The route reads the raw body (size limit, 400 for non-JSON), so its schema is declared by hand.
    event = InteractionEvent.model_json_schema()
    batch = {
        "type": "object",
        "title": "EventBatch",
        "properties": {"events": {"type": "array", "items": event, "minItems": 1, "maxItems": MAX_EVENTS_PER_REQUEST}},
        "required": ["events"],
        "additionalProperties": False,
    }
    content = {"application/json": {"schema": {"oneOf": [event, batch]}}}
    return {"requestBody": {"required": True, "content": content}}


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def create_track_app(*, metrics: MetricsSink | None = None) -> FastAPI:
    """The track app: ``POST /events`` plus ``GET /health``; counts go to ``metrics`` when given.

    Metrics: ``EventsAccepted`` (enqueued), ``EventsRejected`` (refused by validation),
    ``EventsNotEnqueued`` (SQS still failed them after retries).

    Example::

        >>> handler = Mangum(create_track_app(metrics=Metrics()), lifespan="off")
    """
    app = create_app("track")

    def count(name: str, value: int) -> None:
        if metrics is not None and value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    @app.post(
        "/events",
        status_code=202,
        response_model=TrackResponse,
        responses=ERROR_RESPONSES,
        tags=["events"],
        summary="Record interaction events (one, or up to 100 as {events: [...]})",
        openapi_extra=_request_body_schema(),
    )
    def track_events(body: bytes = Depends(_raw_body)) -> TrackResponse:
        # A sync route: FastAPI runs it in a worker thread, so the blocking SQS calls never stall the loop.
        try:
            raw = decode_track_body(body)
        except TowerlightError:
            count("EventsRejected", 1)
            raise
        try:
            events = validate_events(raw)
        except TowerlightError:
            count("EventsRejected", len(raw.events))
            raise
        try:
            event_ids = enqueue_events(events)
        except TowerlightError as exc:
            failed = len(exc.details["failed"]) if isinstance(exc, QueueError) else len(events)
            count("EventsAccepted", len(events) - failed)
            count("EventsNotEnqueued", failed)
            raise
        count("EventsAccepted", len(event_ids))
        return TrackResponse(accepted=len(event_ids), event_ids=event_ids)

    return app
