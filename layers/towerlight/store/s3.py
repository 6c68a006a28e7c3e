"""``s3://bucket/prefix`` artifact store on boto3; works against AWS, MinIO or moto's server.

The endpoint comes from the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, which
botocore reads itself when the client is created; the region from ``AWS_REGION`` (default us-east-1).
Immutability and the pointer's compare-and-swap use S3 conditional writes (``If-None-Match: *`` and
``If-Match: <etag>`` on PutObject). moto 5.2.5 honours both in server mode (``moto/s3/responses.py``
``put_object``), so no client-side emulation is needed.

Reads (``get_bytes``, ``get_with_etag``, ``read_range``: all that serving does) go through
``towerlight.store.s3_reads`` when the environment holds the credentials, as in Lambda: boto3 is then
never imported by a function that only reads its model, and its download starts ~0.25 s of CPU earlier.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from towerlight.config import region
from towerlight.errors import ArtifactError, PointerConflictError, VersionExistsError
from towerlight.store.base import CHUNK_BYTES, ArtifactNotFoundError, check_key, check_prefix
from towerlight.store.s3_reads import ENVIRONMENT, S3Reader, reader_from_environment

logger = logging.getLogger(__name__)

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_DELETE_BATCH = 1000


def s3_client() -> Any:
    """A cached S3 client for the current environment (a new one if the region or endpoint changes)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _client_for(region(), endpoint)


@functools.lru_cache(maxsize=4)
def _client_for(region_name: str, endpoint: str | None) -> Any:
    import boto3  # here: a function that only reads never imports it (see s3_reads)
    from botocore.config import Config

    # `endpoint` is only part of the cache key: botocore resolves AWS_ENDPOINT_URL(_S3) on its own.
    # Path-style addressing for custom endpoints: "bucket.localhost" does not resolve everywhere.
    config = Config(
        region_name=region_name,
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=16,
        s3={"addressing_style": "path"} if endpoint else None,
    )
    client = boto3.session.Session().client("s3", config=config)
    logger.debug("created S3 client", extra={"endpoint": client.meta.endpoint_url, "region": region_name})
    return client


def s3_reader() -> S3Reader | None:
    """The cached standard-library reader for the current environment, or None where boto3 must read."""
    return _reader_for(tuple(os.environ.get(name) for name in ENVIRONMENT))


@functools.lru_cache(maxsize=4)
def _reader_for(settings: tuple[str | None, ...]) -> S3Reader | None:
    # `settings` is only the cache key: a new reader when the credentials or endpoint change.
    return reader_from_environment()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """An ``ArtifactStore`` on an S3 bucket under a key prefix.

    >>> store = S3Store("my-bucket", "towerlight/prod")
    >>> store.put_bytes("models/CURRENT", b"{}")
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else s3_client()

    @property
    def _reader(self) -> S3Reader | None:
        return None if self._client is not None else s3_reader()

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _prefix(self, prefix: str) -> str:
        return self._key(check_prefix(prefix).rstrip("/")) + "/"

    def _fail(self, exc: ClientError | BotoCoreError, key: str, action: str) -> ArtifactError:
        if isinstance(exc, ClientError) and _error_code(exc) in _MISSING_CODES:
            return ArtifactNotFoundError(f"artifact {key!r} not found in {self.uri}", {"key": key})
        return ArtifactError(f"cannot {action} artifact {key!r} in {self.uri}: {exc}", {"key": key})

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """``s3_reads``' errors, worded as the boto3 path words them."""
        try:
            yield
        except ArtifactNotFoundError as exc:
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.uri}", {"key": key}) from exc
        except ArtifactError as exc:
            raise ArtifactError(f"cannot read artifact {key!r} in {self.uri}: {exc.message}", {"key": key}) from exc
        except (OSError, http.client.HTTPException) as exc:  # the body broke off
            raise ArtifactError(f"cannot read artifact {key!r} in {self.uri}: {exc}", {"key": key}) from exc

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        reader = self._reader
        if reader is not None:
            with self._reading(key):
                return reader.read(self.bucket, self._key(key))
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, key, "read") from exc

    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False) -> None:
        self._put(key, data, if_none_match=if_none_match)

    def put_file(self, key: str, path: Path, *, if_none_match: bool = False) -> None:
        # One streamed PutObject (S3 caps it at 5 GB): multipart uploads cannot carry If-None-Match
        # through boto3's transfer manager.
        try:
            with path.open("rb") as body:
                self._put(key, body, if_none_match=if_none_match)
        except OSError as exc:
            raise ArtifactError(f"cannot read local file {path}: {exc}", {"key": key}) from exc

    def _put(self, key: str, body: Any, *, if_none_match: bool) -> None:
        extra = {"IfNoneMatch": "*"} if if_none_match else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **extra)
        except ClientError as exc:
            if if_none_match and _error_code(exc) in _CONDITION_CODES:
                raise VersionExistsError(f"artifact {key!r} already exists", {"key": key}) from exc
            raise self._fail(exc, key, "write") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, key, "write") from exc

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> None:
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except ClientError as exc:
            # 404 here means If-Match named an object that has since been deleted: also a lost race.
            if _error_code(exc) in _CONDITION_CODES | _MISSING_CODES:
                raise PointerConflictError(
                    f"{key!r} changed since it was read (compare-and-swap lost)",
                    {"key": key, "expected_etag": etag},
                ) from exc
            raise self._fail(exc, key, "write") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, key, "write") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                return False
            raise self._fail(exc, key, "inspect") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, key, "inspect") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, key, "delete") from exc

    def list_prefixes(self, prefix: str) -> list[str]:
        full = self._prefix(prefix)
        names: set[str] = set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                names.update(p["Prefix"][len(full) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, prefix, "list") from exc
        return sorted(names)

    def delete_prefix(self, prefix: str) -> None:
        full = self._prefix(prefix)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": k} for k in keys[start : start + _DELETE_BATCH]]
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise ArtifactError(
                        f"cannot delete {first.get('Key')!r} in {self.uri}: {first.get('Message')}",
                        {"key": prefix, "errors": len(response["Errors"])},
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, prefix, "delete") from exc

    def read_range(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        extra = {}
        if start or length is not None:
            extra["Range"] = f"bytes={start}-{'' if length is None else start + length - 1}"
        reader = self._reader
        if reader is not None:
            with self._reading(key), reader.get(self.bucket, self._key(key), extra.get("Range")) as response:
                while chunk := response.read(CHUNK_BYTES):
                    yield chunk
            return
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
            try:
                while chunk := body.read(CHUNK_BYTES):
                    yield chunk
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, key, "read") from exc
