"""Fixtures for the artifact store: a real S3/SQS endpoint (moto's server) and a local directory store.

Loaded from tests/conftest.py through ``pytest_plugins = ["fixtures_s3", ...]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from towerlight.config import get_settings
from towerlight.store import ArtifactStore, open_store
from towerlight.store.s3 import S3Store, s3_client
from towerlight_offline.local.moto_server import ensure_bucket, env_for_endpoint, start_moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto server started for the session; AWS_* variables point at it until the end."""
    with start_moto_server() as server, pytest.MonkeyPatch.context() as env:
        for name, value in env_for_endpoint(server.endpoint_url).items():
            if value is None:
                env.delenv(name, raising=False)
            else:
                env.setenv(name, value)
        yield server.endpoint_url


@pytest.fixture
def s3_store(moto_endpoint: str) -> str:
    """The URI of an empty S3 store: a fresh bucket and prefix on the moto server."""
    suffix = uuid.uuid4().hex[:12]
    bucket = f"towerlight-test-{suffix}"
    ensure_bucket(bucket, endpoint_url=moto_endpoint)
    return f"s3://{bucket}/store-{suffix}"


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    """The URI of an empty local directory store."""
    return (tmp_path / "store").as_uri()


@pytest.fixture
def store_uri(file_store: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty local directory store, named by TOWERLIGHT_STORE for the test."""
    monkeypatch.setenv("TOWERLIGHT_STORE", file_store)
    get_settings.cache_clear()
    yield file_store
    get_settings.cache_clear()


@pytest.fixture(
    params=[
        "file",
        pytest.param("s3", marks=pytest.mark.integration),
        pytest.param("s3-boto3", marks=pytest.mark.integration),
    ]
)
def artifact_store(request: pytest.FixtureRequest) -> ArtifactStore:
    """Each store implementation in turn, empty: the shared contract suites run against all.

    ``s3`` reads through ``towerlight.store.s3_reads`` (the environment holds moto's credentials);
    ``s3-boto3`` is handed a boto3 client, which then does its reads too, as where no credentials are in
    the environment.
    """
    if request.param == "s3-boto3":
        store = open_store(request.getfixturevalue("s3_store"))
        assert isinstance(store, S3Store)
        return S3Store(store.bucket, store.prefix, client=s3_client())
    uri: str = request.getfixturevalue(f"{request.param}_store")
    return open_store(uri)
