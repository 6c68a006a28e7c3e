"""AWS requests on the standard library, for the few a cold Lambda makes before boto3 could.

boto3 costs ~0.25 s of CPU and ~30 MB to import and build a client, all of it during init. The S3 reads of
a model (``towerlight.store.s3_reads``) and the database secret (``towerlight.db.secrets``) need one
signed request each, and only where the environment alone says how to make it, as in Lambda:
``environment_access`` reads the credentials (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``), the region and a custom endpoint as boto3 would, and answers None for anything
else (profiles, SSO, FIPS or dual-stack endpoints, other partitions), where boto3 does the work. Both
readers sign with ``sign``, connect with ``new_connection`` and retry as boto3's standard mode does
(``RETRY_STATUSES``, ``back_off``).

Example::

    >>> access = environment_access(os.environ, "AWS_ENDPOINT_URL_S3")
    >>> headers = sign(access.credentials, access.region, "s3", "GET", "b.s3.us-east-1.amazonaws.com", "/k", {}, now)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})  # as boto3's "standard" retries: throttling and 5xx
# Settings of boto3 these requests do not implement: with any of them set, boto3 makes them.
UNSUPPORTED_SETTINGS = ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")
# Every variable ``environment_access`` reads, but for the service's own endpoint variable.
ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    *UNSUPPORTED_SETTINGS,
)
_AWS_REGION = re.compile(r"(us|eu|ap|ca|sa|me|af|il|mx)-[a-z]+-\d")  # the "aws" partition's host names


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


@dataclass(frozen=True)
class Access:
    """What the environment says about reaching a service: credentials, region, a custom endpoint (None:
    AWS's own, ``<service>.<region>.amazonaws.com``), the certificates TLS trusts."""

    credentials: Credentials
    region: str
    endpoint: str | None = None
    ca_bundle: str | None = None


def environment_access(env: Mapping[str, str], endpoint_variable: str) -> Access | None:
    """How to reach the service whose own endpoint variable is ``endpoint_variable`` (``AWS_ENDPOINT_URL_S3``...)
    when ``env`` holds keys (as Lambda's does), else None (use boto3).

    The endpoint is that variable's, else ``AWS_ENDPOINT_URL`` (neither when
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true), as boto3 chooses it.

    >>> keys = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}
    >>> environment_access(keys, "AWS_ENDPOINT_URL_S3").region
    'us-east-1'
    """
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key or any(env.get(name) for name in UNSUPPORTED_SETTINGS):
        return None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"  # as config.region()
    endpoint = None
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        endpoint = env.get(endpoint_variable) or env.get("AWS_ENDPOINT_URL") or None
    if endpoint is None and not _AWS_REGION.fullmatch(region):
        return None  # China, GovCloud and other partitions have other host names
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        return None
    credentials = Credentials(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None)
    return Access(credentials, region, endpoint, env.get("AWS_CA_BUNDLE") or None)


def new_connection(scheme: str, host: str, timeout: float, ca_bundle: str | None) -> http.client.HTTPConnection:
    """An unopened connection to ``host``; TLS (trusting ``ca_bundle``, default: the system's) for https."""
    if scheme != "https":
        return http.client.HTTPConnection(host, timeout=timeout)
    import ssl  # only for AWS itself: a local endpoint needs no TLS setup

    return http.client.HTTPSConnection(host, timeout=timeout, context=ssl.create_default_context(cafile=ca_bundle))


def back_off(attempt: int) -> None:
    """Sleep before retrying after failed attempt ``attempt`` (0 first): full jitter, as boto3's standard mode."""
    time.sleep(random.uniform(0, 0.1 * 2**attempt))


def sign(
    credentials: Credentials,
    region_name: str,
    service: str,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    now: datetime,
    body: bytes = b"",
) -> dict[str, str]:
    """The headers of a signed request without a query string: ``headers`` (signed too) plus ``x-amz-date``,
    ``x-amz-security-token`` and ``Authorization``; for S3 also ``x-amz-content-sha256``.

    ``path`` is already URI-encoded. Matches botocore's ``S3SigV4Auth`` (S3) and ``SigV4Auth`` (other
    services) header for header (tests/unit/test_s3_reads.py, tests/unit/test_secrets.py).
    """
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed.update({"host": host, "x-amz-date": stamp})
    if service == "s3":
        signed["x-amz-content-sha256"] = payload_hash
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    canonical = "\n".join(
        [method, path, "", *(f"{name}:{signed[name]}" for name in names), "", ";".join(names), payload_hash]
    )
    scope = f"{day}/{region_name}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{credentials.secret_key}".encode()
    for part in (day, region_name, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return {**{n: v for n, v in signed.items() if n != "host"}, "Authorization": authorization}
