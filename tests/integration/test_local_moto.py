"""The local AWS stand-in: moto's server as started by the fixtures, and the helpers that provision it."""

from __future__ import annotations

import json

import boto3
import pytest

from towerlight_offline.local.moto_server import ensure_bucket, ensure_queue, env_for_endpoint


@pytest.mark.integration
def test_ensure_queue_creates_a_queue_with_a_dead_letter_queue(moto_endpoint: str) -> None:
    # GIVEN the moto endpoint the environment points at
    # WHEN the events queue is ensured twice
    url = ensure_queue("towerlight-test-events", max_receive_count=3)
    again = ensure_queue("towerlight-test-events", max_receive_count=3)

    # THEN it exists once, redriving to its DLQ after three receives, and accepts messages
    sqs = boto3.client("sqs")
    assert url == again
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )
    assert policy["deadLetterTargetArn"].endswith(":towerlight-test-events-dlq")
    assert int(policy["maxReceiveCount"]) == 3
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "{}"


@pytest.mark.integration
def test_ensure_bucket_is_idempotent(moto_endpoint: str) -> None:
    # GIVEN a bucket ensured twice
    ensure_bucket("towerlight-test-idempotent")
    ensure_bucket("towerlight-test-idempotent", endpoint_url=moto_endpoint)

    # THEN it exists
    names = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert "towerlight-test-idempotent" in names


def test_env_for_endpoint_fills_gaps_and_removes_overrides() -> None:
    # GIVEN an environment with real-looking credentials and an S3 override
    environ = {"AWS_ACCESS_KEY_ID": "AKIA...", "AWS_ENDPOINT_URL_S3": "http://minio:9000"}

    # WHEN the changes for a moto endpoint are computed
    changes = env_for_endpoint("http://127.0.0.1:5000", environ)

    # THEN the endpoint is set, the override dropped, credentials kept and the region filled in
    assert changes == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
