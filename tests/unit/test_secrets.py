"""The database secret read without boto3: SigV4 as botocore signs a Secrets Manager call, the environment
it accepts, retries and errors (against a scripted HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from towerlight.db import secrets
from towerlight.db.secrets import SecretReadError, read_secret_string
from towerlight.sigv4 import Credentials, sign

NOW = datetime(2026, 11, 30, 14, 5, 9, tzinfo=UTC)
ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:towerlight-db-AbCdEf"
KEYS = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"}


@pytest.mark.parametrize("token", [None, "session-token/with+chars="])
def test_signature_is_the_one_botocore_computes_for_get_secret_value(token: str | None) -> None:
    # GIVEN Secrets Manager's GetSecretValue call, as boto3's client sends it
    body = json.dumps({"SecretId": ARN}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue"}
    host = "secretsmanager.eu-west-1.amazonaws.com"
    # WHEN both sign it at the same instant
    ours = sign(Credentials("AKID", "s3cr3t", token), "eu-west-1", "secretsmanager", "POST", host, "/", headers,
                NOW, body)  # fmt: skip
    request = AWSRequest(method="POST", url=f"https://{host}/", headers=headers, data=body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(BotoCredentials("AKID", "s3cr3t", token), "secretsmanager", "eu-west-1").add_auth(request)
    # THEN every header botocore sends is sent with the same value, and no S3-only header
    assert ours["Authorization"] == request.headers["Authorization"]
    for name in ("X-Amz-Date", "X-Amz-Security-Token"):
        assert ours.get(name.lower()) == request.headers.get(name)
    assert "x-amz-content-sha256" not in ours and "X-Amz-Content-SHA256" not in request.headers


def test_environment_without_credentials_or_with_unsupported_settings_leaves_the_read_to_boto3() -> None:
    assert read_secret_string(ARN, {}) is None  # a profile, SSO or instance role: boto3 resolves those
    assert read_secret_string(ARN, {**KEYS, "AWS_USE_FIPS_ENDPOINT": "true"}) is None
    assert read_secret_string(ARN, {**KEYS, "AWS_REGION": "cn-north-1"}) is None
    assert read_secret_string(ARN, {**KEYS, "AWS_ENDPOINT_URL": "file:///x"}) is None


class _Script(BaseHTTPRequestHandler):
    """Answers each POST with the next (status, body) of the server's script."""

    def do_POST(self) -> None:
        status, body = self.server.script.pop(0)  # type: ignore[attr-defined]
        length = int(self.headers["Content-Length"])
        self.server.seen.append((self.headers, json.loads(self.rfile.read(length))))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[ThreadingHTTPServer, dict[str, str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    server.script, server.seen = [], []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {**KEYS, "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{server.server_port}"}
    try:
        yield server, env
    finally:
        server.shutdown()
        server.server_close()


def test_the_secret_is_read_with_one_signed_post_and_throttling_is_retried(
    scripted: tuple[ThreadingHTTPServer, dict[str, str]],
) -> None:
    server, env = scripted
    # GIVEN Secrets Manager throttling once, then answering
    secret = '{"username": "app", "password": "p", "host": "db", "port": 5432}'
    server.script += [(429, b'{"__type": "ThrottlingException"}'), (200, json.dumps({"SecretString": secret}).encode())]
    # WHEN the secret is read
    with mock.patch("towerlight.sigv4.back_off"):
        found = read_secret_string(ARN, env)
    # THEN its string comes back, asked for by name with the GetSecretValue target, signed for the service
    assert found == secret
    headers, body = server.seen[-1]
    assert body == {"SecretId": ARN} and headers["X-Amz-Target"] == "secretsmanager.GetSecretValue"
    assert "/eu-west-1/secretsmanager/aws4_request" in headers["Authorization"] and len(server.seen) == 2


def test_refusals_and_unreachable_endpoints_raise_with_the_reason(
    scripted: tuple[ThreadingHTTPServer, dict[str, str]],
) -> None:
    server, env = scripted
    # GIVEN a secret that does not exist
    server.script.append((400, b'{"__type": "ResourceNotFoundException", "message": "no such secret"}'))
    # WHEN / THEN the read fails at once, saying why
    with pytest.raises(SecretReadError, match="400: ResourceNotFoundException: no such secret"):
        read_secret_string(ARN, env)
    assert len(server.seen) == 1
    # AND an endpoint that does not answer fails after the retries
    closed = {**KEYS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    with mock.patch("towerlight.sigv4.back_off") as slept, pytest.raises(SecretReadError, match="cannot reach"):
        read_secret_string(ARN, closed)
    assert slept.call_count == secrets.ATTEMPTS - 1
