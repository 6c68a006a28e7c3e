"""SQS transport: a cached client and ``SendMessageBatch`` in chunks of 10 that retries failed entries.

SQS may accept part of a batch and fail the rest (``Failed`` entries in a 200 response), and botocore
only retries whole calls. ``send_messages`` therefore retries the failed entries itself, and reports
exactly which messages were still not sent, so a caller never claims success for a lost message.

Example::

    >>> result = send_messages(queue_url, ['{"a": 1}', '{"a": 2}'])
    >>> result.sent, result.failed
    ([0, 1], [])
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from towerlight.config import region

logger = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10  # entries per SendMessageBatch / ReceiveMessage / DeleteMessageBatch call
SEND_ATTEMPTS = 3
BACKOFF_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class SendFailure:
    """A message that was not sent after every attempt: its position in the input and the last error."""

    index: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """Positions (in the input order) of the messages SQS accepted, and of those it did not."""

    sent: list[int]
    failed: list[SendFailure]


def sqs_client() -> Any:
    """A cached SQS client for the current environment (a new one if the region or endpoint changes).

    Example::

        >>> sqs_client().get_queue_url(QueueName="towerlight-events")["QueueUrl"]
        'http://127.0.0.1:45123/123456789012/towerlight-events'
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
    return _client_for(region(), endpoint)


@functools.lru_cache(maxsize=4)
def _client_for(region_name: str, endpoint: str | None) -> Any:
    # Deferred: boto3 costs ~100 ms of import, and only the first send needs it.
    import boto3
    from botocore.config import Config

    # `endpoint` is only part of the cache key: botocore resolves AWS_ENDPOINT_URL(_SQS) on its own.
    # Short timeouts: the caller is an HTTP request that API Gateway cuts off after 30 s.
    config = Config(
        region_name=region_name,
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=2,
        read_timeout=5,
        max_pool_connections=SQS_BATCH_LIMIT,
    )
    return boto3.session.Session().client("sqs", config=config)


def send_messages(
    queue_url: str,
    bodies: Sequence[str],
    *,
    attempts: int = SEND_ATTEMPTS,
    client: Any = None,
) -> SendResult:
    """Send ``bodies`` with ``SendMessageBatch`` (chunks of 10, concurrently), retrying failed entries.

    An entry is retried up to ``attempts`` times with exponential backoff unless SQS blames the sender
    (``SenderFault``: resending the same message cannot succeed). A call that raises counts as a failed
    attempt for its whole chunk. Never raises for SQS errors: they come back in ``SendResult.failed``.

    Example::

        >>> send_messages(queue_url, ["a", "b"], attempts=1).sent
        [0, 1]
    """
    sqs = client if client is not None else sqs_client()
    starts = range(0, len(bodies), SQS_BATCH_LIMIT)

    def send_chunk(start: int) -> tuple[list[int], list[SendFailure]]:
        chunk = {start + i: body for i, body in enumerate(bodies[start : start + SQS_BATCH_LIMIT])}
        return _send_chunk(sqs, queue_url, chunk, attempts)

    if len(starts) <= 1:
        outcomes = [send_chunk(start) for start in starts]
    else:
        with ThreadPoolExecutor(max_workers=min(len(starts), SQS_BATCH_LIMIT)) as pool:
            outcomes = list(pool.map(send_chunk, starts))
    sent = sorted(i for ok, _ in outcomes for i in ok)
    failed = sorted((f for _, bad in outcomes for f in bad), key=lambda f: f.index)
    if failed:
        logger.error("%d of %d messages were not sent to %s", len(failed), len(bodies), queue_url)
    return SendResult(sent=sent, failed=failed)


def _send_chunk(
    sqs: Any, queue_url: str, pending: dict[int, str], attempts: int
) -> tuple[list[int], list[SendFailure]]:
    """One chunk of at most 10 messages keyed by their input position (also the batch entry Id)."""
    sent: list[int] = []
    final: list[SendFailure] = []
    last_error: dict[int, SendFailure] = {}
    for attempt in range(attempts):
        if attempt:
            # Full jitter: concurrent chunks that failed together do not retry in lockstep.
            time.sleep(random.uniform(0, BACKOFF_SECONDS * 2**attempt))
        entries = [{"Id": str(index), "MessageBody": body} for index, body in pending.items()]
        try:
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except Exception as exc:  # botocore raises many types; each means "this call sent nothing"
            logger.warning("SendMessageBatch failed (attempt %d of %d): %s", attempt + 1, attempts, exc)
            # botocore's HTTP errors (read timeout, ...) carry response=None; service errors a dict.
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") or type(exc).__name__
            last_error = {index: SendFailure(index, str(code), str(exc)) for index in pending}
            continue
        for entry in response.get("Successful", []):
            sent.append(int(entry["Id"]))
            del pending[int(entry["Id"])]
        last_error = {}
        for entry in response.get("Failed", []):
            failure = SendFailure(int(entry["Id"]), entry.get("Code", ""), entry.get("Message", ""))
            if entry.get("SenderFault"):
                final.append(failure)
                del pending[failure.index]
            else:
                last_error[failure.index] = failure
        if not pending:
            break
    final += [last_error.get(i) or SendFailure(i, "Unknown", "not acknowledged by SQS") for i in pending]
    return sent, final
