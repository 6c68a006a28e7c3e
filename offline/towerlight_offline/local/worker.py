"""Run Lambda handlers locally: load ``functions/<name>/app.py``, and drain SQS like an event source mapping.

``QueueWorker`` does what Lambda's SQS event source mapping does: receive a batch, hand it to the
handler as a real SQS event, then delete only the messages the partial batch response did not list in
``batchItemFailures``. If the handler raises, nothing is deleted and the messages come back after the
queue's visibility timeout, as in AWS.

Example::

    >>> worker = QueueWorker(queue_url, load_function_handler("Ingest"))
    >>> worker.drain()
    DrainResult(received=12, deleted=11, failed=1)
    >>> with QueueWorker(queue_url, handler).running():  # a background thread, for `towerlight serve`
    ...     serve_forever()
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from towerlight.errors import ConfigurationError
from towerlight.queue import SQS_BATCH_LIMIT, sqs_client

logger = logging.getLogger(__name__)

FUNCTIONS = ("Recommend", "Track", "Admin", "Ingest", "Retrain")
IDLE_POLL_SECONDS = 0.1
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str = "local"
    memory_limit_in_mb: int = 128
    timeout_seconds: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def project_root() -> Path:
    """The directory holding ``functions/``: the current one or a parent, else this package's checkout.

    Example::

        >>> (project_root() / "functions" / "track" / "app.py").is_file()
        True
    """
    for directory in (Path.cwd(), *Path.cwd().parents):
        if (directory / "functions").is_dir() and (directory / "pyproject.toml").is_file():
            return directory
    return Path(__file__).resolve().parents[3]


def function_name(name: str) -> str:
    """The canonical name (``Track``) of a function given in any case; ``ConfigurationError`` if unknown."""
    for known in FUNCTIONS:
        if name.lower() in (known.lower(), f"{known.lower()}function"):
            return known
    raise ConfigurationError(f"unknown function {name!r}; expected one of {', '.join(FUNCTIONS)}")


def load_function_handler(name: str, root: Path | None = None) -> Handler:
    """Import ``functions/<name>/app.py`` (as ``functions.<name>.app``) and return its ``handler``.

    Example::

        >>> handler = load_function_handler("Ingest")
        >>> handler(load_event("ingest_batch.json"), LocalLambdaContext(function_name="ingest"))
        {'batchItemFailures': []}
    """
    folder = function_name(name).lower()
    path = (root or project_root()) / "functions" / folder / "app.py"
    if not path.is_file():
        raise ConfigurationError(f"function {function_name(name)} has no handler yet: {path} does not exist")
    module_name = f"functions.{folder}.app"
    module = sys.modules.get(module_name)
    if module is None or Path(getattr(module, "__file__", "")).resolve() != path.resolve():
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    handler = getattr(module, "handler", None)
    if not callable(handler):
        raise ConfigurationError(f"{path} defines no handler(event, context)")
    return handler


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The Lambda SQS event for messages from ``ReceiveMessage`` (the shape the event source sends).

    Example::

        >>> sqs_event([{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}"}], arn, "us-east-1")
        {'Records': [{'messageId': 'm1', 'receiptHandle': 'r1', 'body': '{}', ...}]}
    """
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


@dataclass(frozen=True)
class DrainResult:
    """Messages received, deleted (processed) and left in the queue (failed: SQS redelivers them)."""

    received: int = 0
    deleted: int = 0
    failed: int = 0

    def __add__(self, other: DrainResult) -> DrainResult:
        return DrainResult(self.received + other.received, self.deleted + other.deleted, self.failed + other.failed)


class QueueWorker:
    """Feeds an SQS queue to a batch handler the way Lambda's event source mapping does.

    ``batch_size`` messages at most per invocation (gathered from several ``ReceiveMessage`` calls);
    ``wait_seconds`` is the long-poll of the first receive of each batch.
    """

    def __init__(
        self,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 100,
        wait_seconds: int = 1,
        function_name: str = "ingest",
        client: Any = None,
    ) -> None:
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.function_name = function_name
        self._client = client
        self._queue_arn: str | None = None
        self._stop = threading.Event()

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else sqs_client()

    def queue_arn(self) -> str:
        if self._queue_arn is None:
            attributes = self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self._queue_arn = str(attributes["Attributes"]["QueueArn"])
        return self._queue_arn

    def drain_once(self) -> DrainResult:
        """Receive one batch, invoke the handler on it, delete what it processed."""
        messages = self._receive()
        if not messages:
            return DrainResult()
        event = sqs_event(messages, self.queue_arn(), self.client.meta.region_name)
        try:
            response = self.handler(event, LocalLambdaContext(function_name=self.function_name))
        except Exception:
            logger.exception("%s failed on %d messages; they stay in the queue", self.function_name, len(messages))
            return DrainResult(received=len(messages), failed=len(messages))
        failures = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failures]
        self._delete(done)
        return DrainResult(received=len(messages), deleted=len(done), failed=len(messages) - len(done))

    def drain(self, *, timeout: float = 60.0) -> DrainResult:
        """Process batches until a receive comes back empty (or ``timeout`` seconds); returns the totals."""
        total = DrainResult()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.drain_once()
            if not result.received:
                break
            total += result
        return total

    @contextlib.contextmanager
    def running(self) -> Iterator[QueueWorker]:
        """Drain continuously in a daemon thread for the duration of the ``with`` block."""
        self._stop.clear()
        thread = threading.Thread(target=self._loop, name=f"{self.function_name}-worker", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=self.wait_seconds + 10)

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                result = self.drain_once()
            except Exception:  # the queue endpoint went away or refused us: log, wait, try again
                logger.exception("receiving from %s failed; retrying in %.1f s", self.queue_url, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            if result.received:
                logger.info("%s: %s", self.function_name, result)
            elif not self.wait_seconds:
                self._stop.wait(IDLE_POLL_SECONDS)  # no long poll to wait in: do not spin on an empty queue

    def _receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        wait = self.wait_seconds
        while len(messages) < self.batch_size:
            response = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(SQS_BATCH_LIMIT, self.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = response.get("Messages", [])
            if not received:
                break
            messages += received
            wait = 0  # only the first receive of a batch waits for messages to arrive
        return messages

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            chunk = messages[start : start + SQS_BATCH_LIMIT]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for failure in response.get("Failed", []):
                # Harmless: the message comes back and ingest skips its event_id as a duplicate.
                logger.warning("could not delete a processed message: %s", failure.get("Message"))
