"""A real local S3/SQS endpoint: moto's server in a subprocess, plus helpers to point boto3 at it.

>>> with start_moto_server() as server:
...     configure_env(server.endpoint_url)
...     ensure_bucket("towerlight")
...     queue_url = ensure_queue("towerlight-events")
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.exceptions import ClientError

from towerlight.config import region

logger = logging.getLogger(__name__)

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_START_ATTEMPTS = 3


class MotoServerError(RuntimeError):
    """moto's server did not start or did not answer in time."""


class MotoServer:
    """A running ``python -m moto.server``; stop it with ``stop()`` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, log_path: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.log_path = log_path

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"MotoServer({self.endpoint_url!r}, pid={self.process.pid})"

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (kill it if it does not exit within ``timeout``); safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
            logger.info("stopped moto server at %s", self.endpoint_url)
        self.log_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_moto_server(port: int | None = None, *, host: str = "127.0.0.1", timeout: float = 30.0) -> MotoServer:
    """Start moto's S3/SQS server on ``port`` (a free one when None) and wait until it answers.

    >>> server = start_moto_server()
    >>> server.endpoint_url
    'http://127.0.0.1:45123'
    >>> server.stop()
    """
    attempt = 1
    while True:
        server = _spawn(host, port if port is not None else free_port(host))
        try:
            _wait_until_ready(server, timeout)
        except MotoServerError:
            exited = server.process.poll() is not None
            server.stop()
            # A free port can be taken between free_port() and the bind: then try another one.
            if port is not None or not exited or attempt >= _START_ATTEMPTS:
                raise
            attempt += 1
            continue
        logger.info("moto server ready at %s", server.endpoint_url)
        atexit.register(server.stop)
        return server


def _spawn(host: str, port: int) -> MotoServer:
    fd, log_name = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return MotoServer(process, host, port, Path(log_name))


def _wait_until_ready(server: MotoServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise MotoServerError(f"moto server exited with code {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/data.json", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise MotoServerError(f"moto server did not answer within {timeout:.0f}s:\n{server.log_tail()}")


def env_for_endpoint(endpoint_url: str, environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The environment changes that send every boto3 S3/SQS client to ``endpoint_url``.

    Values are the new settings, None meaning "unset": service-specific endpoint overrides are removed
    so they cannot divert S3 or SQS elsewhere; dummy credentials and us-east-1 only fill gaps.
    """
    environ = os.environ if environ is None else environ
    changes: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_ENDPOINT_URL_SQS": None,
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": None,
    }
    if not environ.get("AWS_ACCESS_KEY_ID"):
        changes.update(DUMMY_CREDENTIALS)
        changes["AWS_SESSION_TOKEN"] = None
    aws_region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if not environ.get(name):
            changes[name] = aws_region
    return {name: value for name, value in changes.items() if environ.get(name) != value}


def configure_env(endpoint_url: str) -> dict[str, str | None]:
    """Point this process's boto3 clients at ``endpoint_url``; returns the previous values to restore.

    >>> previous = configure_env("http://127.0.0.1:45123")
    """
    changes = env_for_endpoint(endpoint_url)
    previous = {name: os.environ.get(name) for name in changes}
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return previous


def _client(service: str, endpoint_url: str | None) -> Any:
    endpoint = (
        endpoint_url or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    )
    return _cached_client(service, endpoint, region())


@functools.lru_cache(maxsize=8)
def _cached_client(service: str, endpoint_url: str | None, region_name: str) -> Any:
    # Building a client loads the service model (tenths of a second): reuse one per endpoint.
    return boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name=region_name)


def ensure_bucket(name: str, *, endpoint_url: str | None = None) -> None:
    """Create the S3 bucket unless it exists (endpoint from the environment when not given)."""
    s3 = _client("s3", endpoint_url)
    try:
        s3.head_bucket(Bucket=name)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    location = {} if region() == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region()}}
    try:
        s3.create_bucket(Bucket=name, **location)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    logger.info("created bucket %s", name)


def ensure_queue(name: str, *, endpoint_url: str | None = None, max_receive_count: int | None = 5) -> str:
    """Create the SQS queue (with a ``<name>-dlq`` dead-letter queue unless ``max_receive_count`` is None)
    unless it exists; returns its URL."""
    sqs = _client("sqs", endpoint_url)
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError as exc:
        if "NonExistentQueue" not in str(exc.response.get("Error", {}).get("Code", "")):
            raise
    fifo = name.endswith(".fifo")
    base_attributes = {"FifoQueue": "true"} if fifo else {}
    attributes = dict(base_attributes)
    if max_receive_count is not None:
        dlq_name = f"{name.removesuffix('.fifo')}-dlq" + (".fifo" if fifo else "")
        dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=base_attributes)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn["QueueArn"], "maxReceiveCount": str(max_receive_count)}
        )
    queue_url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    logger.info("created queue %s", queue_url)
    return queue_url
