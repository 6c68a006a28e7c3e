"""Track function: ``POST /events`` (API Gateway HTTP API) → validated events in SQS.

Runs as ``app.handler`` in Lambda and as ``functions.track.app.handler`` in tests. The service is
``towerlight.api.track``; this module only wires Powertools around it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from towerlight.api.track import create_track_app
from towerlight.tracing import traced

logger = Logger(service="track")
metrics = Metrics(service="track")
copy_config_to_registered_loggers(source_logger=logger, include={"towerlight"})

app = create_track_app(metrics=metrics)
asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@traced("track")
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return asgi(event, context)
