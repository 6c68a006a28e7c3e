"""recommend: personalised top-k, similar items and /health behind API Gateway (HTTP API, payload v2).

The FastAPI app (towerlight.api.recommend) does the work; this module adds Powertools' structured logs
with the request's correlation id, EMF metrics (latency, model version, fallbacks, cold starts) and
X-Ray tracing. The app is built at import, the model and the database connection on first use.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from towerlight.api.recommend import create_recommend_app

logger = Logger(service="recommend")
metrics = Metrics(service="recommend")
tracer = Tracer(service="recommend")
copy_config_to_registered_loggers(source_logger=logger, include={"towerlight"})

asgi = Mangum(create_recommend_app(metrics=metrics), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return asgi(event, context)
