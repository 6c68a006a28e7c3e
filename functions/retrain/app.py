"""retrain: scheduled (EventBridge Scheduler) or requested (POST /admin/retrain) retraining.

Reads a window of events from Postgres, runs the offline pipeline, publishes the new version and
promotes it only when the quality gate passes (towerlight_offline.retrain). One run per execution id:
a repeated event returns the recorded result. The only function with the training libraries (its
container image: functions/retrain/Dockerfile).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from towerlight_offline.retrain import run_retrain

logger = Logger(service="retrain")
metrics = Metrics(service="retrain")
tracer = Tracer(service="retrain")
copy_config_to_registered_loggers(source_logger=logger, include={"towerlight", "towerlight_offline"})


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = run_retrain(event)
    if result.get("duplicate"):
        metrics.add_metric(name="RetrainDuplicate", unit=MetricUnit.Count, value=1)
    elif "status" in result:
        metrics.add_metric(name=f"Retrain{result['status'].capitalize()}", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="RetrainPromoted", unit=MetricUnit.Count, value=int(bool(result.get("promoted"))))
    logger.info("retrain finished", extra={"retrain": result})
    return result
