"""recommend: personalised top-k, similar items and /health behind API Gateway (HTTP API, payload v2).

The FastAPI app (towerlight.api.recommend) does the work; this module adds Powertools' structured logs
with the request's correlation id, EMF metrics (latency, model version, fallbacks, cold starts) and
X-Ray tracing when it is on. The model starts loading first, in a background thread, so that its
download overlaps the imports below, and the end of this module waits for it: in Lambda all of it
happens during init. The database connection is opened then too, while the model loads (elsewhere, as in
tests, on first use).
"""

from __future__ import annotations

from towerlight.model.registry import init_wait_seconds, prefetch

finish_model_load = prefetch()

import contextlib  # noqa: E402
from typing import Any  # noqa: E402

from aws_lambda_powertools import Logger, Metrics  # noqa: E402
from aws_lambda_powertools.logging import correlation_paths  # noqa: E402
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers  # noqa: E402
from aws_lambda_powertools.utilities.typing import LambdaContext  # noqa: E402
from mangum import Mangum  # noqa: E402

from towerlight.api.recommend import create_recommend_app  # noqa: E402
from towerlight.db.connection import shared_connection  # noqa: E402
from towerlight.errors import TowerlightError  # noqa: E402
from towerlight.tracing import traced  # noqa: E402

logger = Logger(service="recommend")
metrics = Metrics(service="recommend")
copy_config_to_registered_loggers(source_logger=logger, include={"towerlight"})

asgi = Mangum(create_recommend_app(metrics=metrics), lifespan="off")
if init_wait_seconds():
    with contextlib.suppress(TowerlightError):  # the first request reports a database that is down
        shared_connection()  # Postgres' handshake is network time: it overlaps the model's load
finish_model_load()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@traced("recommend", capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return asgi(event, context)
