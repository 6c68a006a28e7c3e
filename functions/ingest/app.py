"""Ingest function: SQS batches of interaction events → Postgres, with a partial batch response.

Invalid records are reported one by one in ``batchItemFailures``; a database error reports every
record, so SQS redelivers the whole batch (the write is one transaction: nothing half-written).
The service is ``towerlight.ingest``; this module only wires Powertools around it. With item exploration
on, each batch is followed by a learning pass of the VW model (``towerlight.exploration.learning``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from towerlight.exploration.learning import exploration_learner
from towerlight.ingest import EventBatchProcessor, IngestBatch, record_handler, write_events

logger = Logger(service="ingest")
metrics = Metrics(service="ingest")
tracer = Tracer(service="ingest")
copy_config_to_registered_loggers(source_logger=logger, include={"towerlight"})


@tracer.capture_method
def write(batch: IngestBatch) -> int:
    return write_events(batch)


processor = EventBatchProcessor(write=write, metrics=metrics)
learner = exploration_learner()  # None unless item exploration is on


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    logger.info("batch processed", extra=asdict(processor.stats))
    if learner is not None:  # after the batch committed: learning never fails it
        learner.after_batch(metrics)
    return dict(response)
