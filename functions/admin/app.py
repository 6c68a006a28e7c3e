"""admin: operate Towerlight behind API Gateway's AWS_IAM auth (HTTP API, payload v2).

Model status, promote, rollback, retraining requests and statistics (towerlight.api.admin); this
module adds Powertools' structured logs with the request's correlation id, EMF metrics and X-Ray
tracing when it is on. Runs as ``app.handler`` in Lambda and as ``functions.admin.app.handler`` in tests.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from towerlight.api.admin import create_admin_app
from towerlight.tracing import traced

logger = Logger(service="admin")
metrics = Metrics(service="admin")
copy_config_to_registered_loggers(source_logger=logger, include={"towerlight"})

asgi = Mangum(create_admin_app(), lifespan="off")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@traced("admin", capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return asgi(event, context)
