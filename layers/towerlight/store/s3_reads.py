"""Signed S3 GETs on the standard library alone: how a cold Lambda starts its model download early.

boto3 costs ~0.25 s of CPU and ~30 MB to import and build a client (it parses the S3 service model),
all of it before the first byte of a model arrives. Reading an object needs none of that: one GET signed
with Signature Version 4 (``towerlight.sigv4``), sent by ``http.client``. ``S3Reader`` does only that, and only where
it reads what boto3 would: credentials from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``; Lambda sets them), the endpoint from
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else ``https://<bucket>.s3.<region>.amazonaws.com``.
Anything else (profiles, SSO, FIPS or dual-stack endpoints, other partitions) returns no reader from
``reader_from_environment`` and boto3 does the reads as it does the writes.

Example::

    >>> reader = reader_from_environment()
    >>> with reader.get("my-bucket", "towerlight/models/CURRENT") as response:
    ...     response.read()
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from towerlight import sigv4
from towerlight.errors import ArtifactError
from towerlight.sigv4 import Credentials
from towerlight.store.base import ArtifactNotFoundError

ATTEMPTS = 4  # as boto3's "standard" retries: connection errors, throttling and 5xx
CONNECT_TIMEOUT_SECONDS = 5.0  # as the boto3 client's
READ_TIMEOUT_SECONDS = 60.0
_BUCKET_AS_HOST = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")  # no dots: the TLS certificate covers it
# Every variable ``reader_from_environment`` reads (a cache of readers is keyed on their values).
ENVIRONMENT = (
    *sigv4.ENVIRONMENT,
    "AWS_ENDPOINT_URL_S3",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",  # a setting of boto3's S3 client this reader does not implement
)


class S3Reader:
    """Signed GETs of S3 objects over one keep-alive connection per thread.

    ``endpoint`` is a custom S3 endpoint (path-style requests, as the boto3 client is configured for
    one) or None for AWS itself (virtual-hosted style); ``ca_bundle`` the certificates TLS trusts
    (``AWS_CA_BUNDLE``; default: the system's).
    """

    def __init__(
        self, credentials: Credentials, region_name: str, endpoint: str | None = None, ca_bundle: str | None = None
    ) -> None:
        self.credentials = credentials
        self.region = region_name
        self.endpoint = urlsplit(endpoint) if endpoint else None
        self.ca_bundle = ca_bundle
        self._local = threading.local()

    def _address(self, bucket: str, key: str) -> tuple[str, str, str]:
        """(scheme, host[:port], encoded path) of ``bucket/key``."""
        encoded = quote(key, safe="/~")
        if self.endpoint is not None:
            base = self.endpoint.path.rstrip("/")
            return self.endpoint.scheme, self.endpoint.netloc, f"{base}/{quote(bucket, safe='')}/{encoded}"
        if _BUCKET_AS_HOST.match(bucket):
            return "https", f"{bucket}.s3.{self.region}.amazonaws.com", f"/{encoded}"
        return "https", f"s3.{self.region}.amazonaws.com", f"/{quote(bucket, safe='')}/{encoded}"

    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        connections: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("by_host", {})
        connection = connections.get((scheme, host))
        if connection is None:
            connection = sigv4.new_connection(scheme, host, CONNECT_TIMEOUT_SECONDS, self.ca_bundle)
            connections[(scheme, host)] = connection
        return connection

    @contextlib.contextmanager
    def get(self, bucket: str, key: str, byte_range: str | None = None) -> Iterator[http.client.HTTPResponse]:
        """The open response to ``GET bucket/key`` (status 200 or 206), retried on connection errors,
        throttling and 5xx; ``ArtifactNotFoundError`` for a missing object, ``ArtifactError`` otherwise."""
        scheme, host, path = self._address(bucket, key)
        extra = {"Range": byte_range} if byte_range else {}
        for attempt in range(ATTEMPTS):
            connection = self._connection(scheme, host)
            reused = connection.sock is not None
            try:
                if not reused:
                    connection.connect()  # with the connect timeout; then the longer one for reads
                    connection.sock.settimeout(READ_TIMEOUT_SECONDS)
                headers = sigv4.sign(self.credentials, self.region, "s3", "GET", host, path, extra, datetime.now(UTC))
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if attempt + 1 == ATTEMPTS:
                    raise ArtifactError(f"cannot read {key!r} from S3: {exc}", {"key": key}) from exc
                if not reused:  # a kept-alive connection the server has since closed: retry at once
                    sigv4.back_off(attempt)
                continue
            if response.status in (200, 206):
                break
            body = response.read()
            if response.status in sigv4.RETRY_STATUSES and attempt + 1 < ATTEMPTS:
                sigv4.back_off(attempt)
                continue
            raise _error(key, response.status, body)
        try:
            yield response
            if not response.isclosed():
                connection.close()  # the body was not read to its end: the connection cannot be reused
        except BaseException:
            connection.close()
            raise

    def read(self, bucket: str, key: str) -> tuple[bytes, str]:
        """The whole object and its ETag (a body that breaks off raises ``OSError`` or ``HTTPException``)."""
        with self.get(bucket, key) as response:
            return response.read(), response.getheader("ETag", "")


def _error(key: str, status: int, body: bytes) -> ArtifactError:
    code = re.search(rb"<Code>([^<]*)</Code>", body)
    message = re.search(rb"<Message>([^<]*)</Message>", body)
    name = code.group(1).decode(errors="replace") if code else str(status)
    if status == 404 or name == "NoSuchKey":
        return ArtifactNotFoundError(f"artifact {key!r} not found", {"key": key})
    detail = f": {message.group(1).decode(errors='replace')}" if message else ""
    return ArtifactError(f"cannot read {key!r} from S3 ({status} {name}{detail})", {"key": key, "status": status})


def reader_from_environment(environ: Mapping[str, str] | None = None) -> S3Reader | None:
    """A reader when the environment alone says how to reach S3 (as in Lambda), else None (use boto3).

    >>> reader_from_environment({"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}).region
    'us-east-1'
    """
    env = os.environ if environ is None else environ
    access = sigv4.environment_access(env, "AWS_ENDPOINT_URL_S3")
    if access is None or env.get("AWS_S3_US_EAST_1_REGIONAL_ENDPOINT"):
        return None
    return S3Reader(access.credentials, access.region, access.endpoint, access.ca_bundle)
