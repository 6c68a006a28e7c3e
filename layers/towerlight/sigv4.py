"""AWS Signature Version 4 on the standard library, for the few requests a cold Lambda makes before boto3.

boto3 costs ~0.25 s of CPU and ~30 MB to import and build a client, all of it during init. The S3 reads of
a model (``towerlight.store.s3_reads``) and the database secret (``towerlight.db.secrets``) need one
signed request each, and only where the environment alone says how to make it, as in Lambda:
``environment_access`` reads the credentials (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``) and the region, and answers None for anything else (profiles, SSO, FIPS or
dual-stack endpoints, other partitions), where boto3 does the work.

Example::

    >>> access = environment_access(os.environ)
    >>> headers = sign(access.credentials, access.region, "s3", "GET", "b.s3.us-east-1.amazonaws.com", "/k", {}, now)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Settings of boto3 these requests do not implement: with any of them set, boto3 makes them.
UNSUPPORTED_SETTINGS = ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")
# Every variable ``environment_access`` reads.
ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
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
    """What the environment says about reaching AWS: credentials, region, the certificates TLS trusts."""

    credentials: Credentials
    region: str
    ca_bundle: str | None = None

    def in_aws_partition(self) -> bool:
        """Whether AWS's own endpoints are ``<service>.<region>.amazonaws.com`` (not China, GovCloud...)."""
        return bool(_AWS_REGION.fullmatch(self.region))


def environment_access(env: Mapping[str, str]) -> Access | None:
    """The credentials and region of ``env`` when it holds keys (as Lambda's does), else None (use boto3).

    >>> environment_access({"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}).region
    'us-east-1'
    """
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key or any(env.get(name) for name in UNSUPPORTED_SETTINGS):
        return None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"  # as config.region()
    credentials = Credentials(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None)
    return Access(credentials, region, env.get("AWS_CA_BUNDLE") or None)


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
