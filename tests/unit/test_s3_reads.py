"""The standard-library S3 reader: SigV4 as botocore signs, the environment it accepts, retries and errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from towerlight.errors import ArtifactError
from towerlight.sigv4 import Credentials, sign
from towerlight.store.base import ArtifactNotFoundError
from towerlight.store.s3_reads import ATTEMPTS, S3Reader, reader_from_environment

NOW = datetime(2026, 11, 30, 14, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize("token", [None, "session-token/with+chars="])
@pytest.mark.parametrize("byte_range", [None, "bytes=67108864-134217727"])
def test_signature_is_the_one_botocore_computes(token: str | None, byte_range: str | None) -> None:
    # GIVEN a ranged GET of a key with characters that need encoding, to a custom endpoint
    url = "http://127.0.0.1:9000/my-bucket/prefix/models/v%201/items.hnsw"
    headers = {"Range": byte_range} if byte_range else {}

    # WHEN both sign it at the same instant
    ours = sign(
        Credentials("AKID", "s3cr3t", token), "eu-west-1", "s3", "GET", "127.0.0.1:9000", url[21:], headers, NOW
    )
    request = AWSRequest(method="GET", url=url, headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        S3SigV4Auth(BotoCredentials("AKID", "s3cr3t", token), "s3", "eu-west-1").add_auth(request)

    # THEN every header botocore sends is sent with the same value
    assert ours["Authorization"] == request.headers["Authorization"]
    for name in ("X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"):
        assert ours.get(name.lower()) == request.headers.get(name)


def test_environment_without_credentials_or_with_unsupported_settings_leaves_reads_to_boto3() -> None:
    keys = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}
    assert reader_from_environment({}) is None  # a profile, SSO or instance role: boto3 resolves those
    assert reader_from_environment({**keys, "AWS_USE_FIPS_ENDPOINT": "true"}) is None
    assert reader_from_environment({**keys, "AWS_REGION": "cn-north-1"}) is None
    assert reader_from_environment({**keys, "AWS_REGION": "cn-north-1", "AWS_ENDPOINT_URL": "http://h:1"}) is not None


def test_endpoint_variables_choose_the_address_as_botocore_does() -> None:
    keys = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"}
    both = {**keys, "AWS_ENDPOINT_URL": "http://general:1", "AWS_ENDPOINT_URL_S3": "https://minio:9000/base"}

    custom = reader_from_environment(both)
    aws = reader_from_environment({**both, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    assert custom is not None and aws is not None

    # the S3-specific endpoint wins, path-style; without one, AWS's virtual-hosted (or path-style) names
    assert custom._address("b", "k/x y") == ("https", "minio:9000", "/base/b/k/x%20y")
    assert aws._address("my-bucket", "k") == ("https", "my-bucket.s3.eu-west-1.amazonaws.com", "/k")
    assert aws._address("dotted.bucket", "k") == ("https", "s3.eu-west-1.amazonaws.com", "/dotted.bucket/k")


class _Script(BaseHTTPRequestHandler):
    """Answers each GET with the next (status, body) of the server's script."""

    def do_GET(self) -> None:
        status, body = self.server.script.pop(0)  # type: ignore[attr-defined]
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"etag-1"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[ThreadingHTTPServer, S3Reader]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    server.script, server.seen = [], []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    reader = S3Reader(Credentials("AKID", "secret"), "us-east-1", f"http://127.0.0.1:{server.server_port}")
    try:
        yield server, reader
    finally:
        server.shutdown()
        server.server_close()


def test_throttling_and_server_errors_are_retried(scripted: tuple[ThreadingHTTPServer, S3Reader]) -> None:
    server, reader = scripted
    server.script += [(503, b"<Error><Code>SlowDown</Code></Error>"), (500, b""), (200, b"model bytes")]  # type: ignore[attr-defined]

    with mock.patch("towerlight.sigv4.back_off"):
        data, etag = reader.read("bucket", "models/CURRENT")

    assert (data, etag) == (b"model bytes", '"etag-1"')
    assert len(server.seen) == 3 and all("AWS4-HMAC-SHA256" in h["Authorization"] for h in server.seen)  # type: ignore[attr-defined]


def test_missing_objects_and_refusals_raise_artifact_errors(scripted: tuple[ThreadingHTTPServer, S3Reader]) -> None:
    server, reader = scripted
    server.script += [  # type: ignore[attr-defined]
        (404, b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"),
        (403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"),
    ]

    with pytest.raises(ArtifactNotFoundError):
        reader.read("bucket", "models/CURRENT")
    with pytest.raises(ArtifactError, match="403 AccessDenied: Access Denied"):
        reader.read("bucket", "models/CURRENT")


def test_an_endpoint_that_does_not_answer_fails_after_the_retries() -> None:
    # GIVEN an endpoint where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reader = S3Reader(Credentials("AKID", "secret"), "us-east-1", f"http://127.0.0.1:{port}")

    # WHEN an object is read, THEN each attempt backs off and the last failure is an ArtifactError
    with mock.patch("towerlight.sigv4.back_off") as back_off, pytest.raises(ArtifactError, match="refused"):
        reader.read("bucket", "models/CURRENT")
    assert back_off.call_count == ATTEMPTS - 1
