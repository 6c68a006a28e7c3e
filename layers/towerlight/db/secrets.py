"""The database secret read with one signed POST on the standard library, so that init need not import boto3.

Lambda's functions name their RDS secret in ``DATABASE_SECRET_ARN``; recommend reads it during init while
its model loads. boto3's import and client (~0.25 s of CPU) would compete with that load for the GIL, for
one request. ``read_secret_string`` makes that request itself (Secrets Manager's ``GetSecretValue``,
signed by ``towerlight.sigv4``) where the environment alone says how (as in Lambda: keys in the
environment, an AWS region or ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL``), and answers
None elsewhere: the caller then uses boto3.

Example::

    >>> read_secret_string("arn:aws:secretsmanager:us-east-1:123456789012:secret:towerlight-db")
    '{"username": "towerlight", "password": "...", "host": "db.example", "port": 5432, "dbname": "towerlight"}'
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from towerlight import sigv4

ATTEMPTS = 3
TIMEOUT_SECONDS = 5.0
_HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "secretsmanager.GetSecretValue"}


class SecretReadError(Exception):
    """Secrets Manager refused or could not be reached (the caller reports the database as unavailable)."""


def read_secret_string(secret_arn: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The ``SecretString`` of ``secret_arn``, or None when boto3 must read it (see the module docstring).

    Raises ``SecretReadError`` when Secrets Manager answers with an error or cannot be reached, after
    retrying connection errors, throttling and 5xx.
    """
    env = os.environ if environ is None else environ
    access = sigv4.environment_access(env, "AWS_ENDPOINT_URL_SECRETS_MANAGER")
    if access is None:
        return None
    endpoint = access.endpoint or f"https://secretsmanager.{access.region}.amazonaws.com"
    address = urlsplit(endpoint)
    body = json.dumps({"SecretId": secret_arn}).encode()
    path = address.path.rstrip("/") or "/"
    failure = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            sigv4.back_off(attempt)
        headers = sigv4.sign(
            access.credentials, access.region, "secretsmanager", "POST", address.netloc, path, _HEADERS,
            datetime.now(UTC), body,
        )  # fmt: skip
        try:
            status, answer = _post(address.scheme, address.netloc, path, headers, body, access.ca_bundle)
        except (OSError, http.client.HTTPException) as exc:
            failure = f"cannot reach Secrets Manager at {endpoint}: {exc}"
            continue
        if status == 200:
            return str(json.loads(answer)["SecretString"])
        failure = f"Secrets Manager answered {status}: {_reason(answer)}"
        if status not in sigv4.RETRY_STATUSES:
            break
    raise SecretReadError(failure)


def _post(
    scheme: str, host: str, path: str, headers: Mapping[str, str], body: bytes, ca_bundle: str | None
) -> tuple[int, bytes]:
    connection = sigv4.new_connection(scheme, host, TIMEOUT_SECONDS, ca_bundle)
    try:
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _reason(answer: bytes) -> str:
    """The error's type and message from a JSON error body (``{"__type": ..., "message": ...}``)."""
    try:
        error = json.loads(answer)
    except ValueError:
        return answer[:200].decode(errors="replace")
    kind = str(error.get("__type", "")).rsplit("#", 1)[-1]
    return f"{kind}: {error.get('message') or error.get('Message') or ''}".strip(": ")
