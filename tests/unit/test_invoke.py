"""Running functions locally without network: ``towerlight invoke``, the queue worker, serve's combined app."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EVENTS_DIR
from mangum import Mangum

from towerlight.api.recommend import create_recommend_app
from towerlight.api.track import create_track_app
from towerlight.config import get_settings
from towerlight.errors import ConfigurationError
from towerlight_offline.cli import main
from towerlight_offline.commands.invoke import apply_environment, invoke, read_function_config
from towerlight_offline.commands.serve import create_local_app
from towerlight_offline.local.worker import (
    DrainResult,
    LocalLambdaContext,
    QueueWorker,
    load_function_handler,
    sqs_event,
)

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  ModelRefreshSeconds:
    Type: Number
    Default: 60
  FunctionTimeout:
    Type: Number
    Default: 10
  DatabaseSecretArn:
    Type: String
Globals:
  Function:
    Runtime: python3.12
    MemorySize: 512
    Timeout: !Ref FunctionTimeout
    Environment:
      Variables:
        TOWERLIGHT_STORE: !Sub "s3://${ArtifactBucket}/towerlight"
        MODEL_REFRESH_SECONDS: !Ref ModelRefreshSeconds
        DATABASE_SECRET_ARN: !Ref DatabaseSecretArn
        POWERTOOLS_METRICS_NAMESPACE: Towerlight
        TOWERLIGHT_DEBUG: false
Resources:
  TrackFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/track/
      Handler: app.handler
      MemorySize: 256
      Environment:
        Variables:
          EVENTS_QUEUE_URL: !Ref EventsQueue
          POWERTOOLS_SERVICE_NAME: track
          DATABASE_SECRET_ARN: !GetAtt [Database, Secret]
  Ingest:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ./functions/ingest
      Environment:
        Variables:
          BATCH_NAME: { "Fn::Join": ["-", ["a", "b"]] }
  EventsQueue:
    Type: AWS::SQS::Queue
"""

REPORT = re.compile(
    r"^REPORT RequestId: [0-9a-f-]{36} Duration: \d+\.\d{2} ms Billed Duration: \d+ ms "
    r"Memory Size: (\d+) MB Max Memory Used: \d+ MB( Init Duration: \d+\.\d{2} ms)?$"
)


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The variables the template names are unset; invoke's changes to os.environ are undone afterwards.

    Handler modules first imported here read the template's environment at import: they are forgotten
    afterwards, so later tests import them again under their own settings.
    """
    saved = dict(os.environ)
    modules = {name for name in sys.modules if name.startswith("functions.")}
    for name in ("MODEL_REFRESH_SECONDS", "POWERTOOLS_SERVICE_NAME", "AWS_SAM_LOCAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    for name in [n for n in sys.modules if n.startswith("functions.") and n not in modules]:
        del sys.modules[name]


@pytest.fixture
def broken_function(tmp_path: Path) -> Iterator[Path]:
    """A project root whose Retrain handler raises; its module is forgotten afterwards."""
    folder = tmp_path / "functions" / "retrain"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("def handler(event, context):\n    raise RuntimeError('boom')\n")
    yield tmp_path
    sys.modules.pop("functions.retrain.app", None)


# --- the template ----------------------------------------------------------------------------------


def test_environment_is_globals_plus_the_function_without_cloudformation_values(template: Path) -> None:
    # GIVEN a template with !Sub/!Ref/!GetAtt values, numbers, booleans and parameters with defaults
    # WHEN the Track function's configuration is read
    config = read_function_config(template, "track")
    # THEN values are strings as Lambda passes them, a !Ref to a parameter takes its default (as sam local
    # does), and what only CloudFormation can compute (resources, a parameter without default) is skipped
    assert config.environment == {
        "MODEL_REFRESH_SECONDS": "60",
        "POWERTOOLS_METRICS_NAMESPACE": "Towerlight",
        "TOWERLIGHT_DEBUG": "false",
        "POWERTOOLS_SERVICE_NAME": "track",
    }
    # AND the function's MemorySize overrides the global one; the Timeout comes from Globals' parameter
    assert (config.name, config.memory_mb, config.timeout_s) == ("Track", 256, 10.0)


def test_a_function_is_also_found_by_its_code_uri(template: Path) -> None:
    # GIVEN the Ingest resource (logical id "Ingest", CodeUri ./functions/ingest, a Fn::Join value)
    config = read_function_config(template, "Ingest")
    # THEN it gets the global environment and memory, and the Fn::Join value is skipped
    assert "BATCH_NAME" not in config.environment
    assert config.environment["POWERTOOLS_METRICS_NAMESPACE"] == "Towerlight"
    assert config.memory_mb == 512


def test_without_a_template_lambda_defaults_apply(tmp_path: Path) -> None:
    # GIVEN no template  WHEN read  THEN no variables, Lambda's default memory and timeout
    config = read_function_config(tmp_path / "missing.yaml", "Recommend")
    assert (config.environment, config.memory_mb, config.timeout_s) == ({}, 128, 3.0)


def test_unknown_functions_are_refused(template: Path) -> None:
    # GIVEN a name that is not one of the five functions  WHEN read  THEN a clear error
    with pytest.raises(ConfigurationError, match="expected one of Recommend, Track, Admin, Ingest, Retrain"):
        read_function_config(template, "Billing")


def test_variables_already_set_in_the_shell_win(template: Path, clean_env: pytest.MonkeyPatch) -> None:
    # GIVEN MODEL_REFRESH_SECONDS set in the shell
    clean_env.setenv("MODEL_REFRESH_SECONDS", "5")
    # WHEN the template's environment is applied
    applied = apply_environment(read_function_config(template, "Track"))
    # THEN the shell's value stays, the others are set, and what sam local sets is there too
    assert os.environ["MODEL_REFRESH_SECONDS"] == "5"
    assert "MODEL_REFRESH_SECONDS" not in applied
    assert os.environ["POWERTOOLS_SERVICE_NAME"] == "track"
    assert os.environ["AWS_SAM_LOCAL"] == "true"
    assert os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


# --- invoking --------------------------------------------------------------------------------------


def test_invoke_runs_the_handler_and_reports_like_lambda(template: Path, clean_env: pytest.MonkeyPatch) -> None:
    # GIVEN the track function and its health event
    event = json.loads((EVENTS_DIR / "health_track.json").read_text())
    # WHEN invoked
    outcome = invoke("Track", event, template=template)
    # THEN the API Gateway response comes back, with a REPORT line showing the template's memory size
    assert outcome.error is False
    assert outcome.response["statusCode"] == 200
    assert json.loads(outcome.response["body"])["function"] == "track"
    match = REPORT.match(outcome.report_line())
    assert match is not None and match.group(1) == "256"


def test_the_cli_prints_the_response_json_then_the_report(
    template: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the CLI  WHEN `towerlight invoke Track -e events/health_track.json` runs
    code = main(["invoke", "Track", "-e", str(EVENTS_DIR / "health_track.json"), "-t", str(template)])
    out = capsys.readouterr().out
    # THEN it exits 0 and stdout is the response JSON followed by one REPORT line (logs went to stderr)
    body, _, report = out.rstrip("\n").rpartition("\n")
    assert code == 0
    assert json.loads(body)["statusCode"] == 200
    assert REPORT.match(report)


def test_a_handler_that_raises_gives_lambdas_error_payload(
    broken_function: Path, clean_env: pytest.MonkeyPatch
) -> None:
    # GIVEN a handler that raises  WHEN invoked
    outcome = invoke("Retrain", {}, root=broken_function)
    # THEN the outcome is Lambda's error payload
    assert outcome.error is True
    assert (outcome.response["errorType"], outcome.response["errorMessage"]) == ("RuntimeError", "boom")
    assert outcome.response["stackTrace"]


def test_a_function_without_a_handler_file_is_a_clear_error(tmp_path: Path) -> None:
    # GIVEN a project where functions/admin/app.py does not exist
    # WHEN it is loaded  THEN the error names the missing file
    with pytest.raises(ConfigurationError, match=r"function Admin has no handler yet: .*functions/admin/app.py"):
        load_function_handler("Admin", root=tmp_path)


def test_the_cli_reports_a_missing_event_file(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an event path that does not exist  WHEN invoked  THEN exit code 2 and an error on stderr
    assert main(["invoke", "Track", "-e", "events/nope.json"]) == 2
    assert "cannot read event file events/nope.json" in capsys.readouterr().err


# --- the queue worker ------------------------------------------------------------------------------


class FakeQueue:
    """ReceiveMessage / DeleteMessageBatch over a list, as SQS answers them."""

    class meta:
        region_name = "eu-west-1"

    def __init__(self, bodies: list[str]) -> None:
        self.messages = [
            {"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": body, "Attributes": {}}
            for n, body in enumerate(bodies)
        ]
        self.in_flight: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:eu-west-1:123456789012:events"}}

    def receive_message(self, MaxNumberOfMessages: int, **_: Any) -> dict[str, Any]:
        batch, self.messages = self.messages[:MaxNumberOfMessages], self.messages[MaxNumberOfMessages:]
        self.in_flight += batch
        return {"Messages": batch} if batch else {}

    def delete_message_batch(self, Entries: list[dict[str, str]], **_: Any) -> dict[str, Any]:
        assert len(Entries) <= 10
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def test_sqs_event_has_the_shape_lambda_delivers() -> None:
    # GIVEN a received message  WHEN wrapped  THEN it matches the records in events/ingest_batch.json
    [record] = sqs_event([{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}"}], "arn:q", "eu-west-1")["Records"]
    reference = json.loads((EVENTS_DIR / "ingest_batch.json").read_text())["Records"][0]
    assert set(record) == set(reference)
    assert (record["eventSource"], record["md5OfBody"]) == ("aws:sqs", "99914b932bd37a50b983c5e7c90ae93b")


def test_the_worker_deletes_only_what_the_handler_did_not_report_failed() -> None:
    # GIVEN 25 messages and a handler that fails every message whose body is "bad"
    sqs = FakeQueue(["bad" if n % 5 == 0 else "ok" for n in range(25)])
    seen: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(len(event["Records"]))
        assert context.get_remaining_time_in_millis() > 0
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "bad"]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

    # WHEN drained in batches of up to 20
    result = QueueWorker("q", handler, batch_size=20, wait_seconds=0, client=sqs).drain()
    # THEN two invocations (20 + 5), the 5 bad ones kept, the 20 good ones deleted
    assert seen == [20, 5]
    assert result == DrainResult(received=25, deleted=20, failed=5)
    assert sorted(sqs.deleted) == sorted(f"r{n}" for n in range(25) if n % 5)


def test_the_worker_deletes_nothing_when_the_handler_raises() -> None:
    # GIVEN a handler that crashes
    sqs = FakeQueue(["a", "b"])

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("database is down")

    # WHEN one batch is processed  THEN both messages stay (SQS redelivers them after the timeout)
    assert QueueWorker("q", handler, wait_seconds=0, client=sqs).drain_once() == DrainResult(2, 0, 2)
    assert sqs.deleted == []


def test_the_background_worker_drains_until_stopped() -> None:
    # GIVEN a queue with three messages and a handler that accepts everything
    sqs = FakeQueue(["a", "b", "c"])
    processed: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        processed.extend(r["body"] for r in event["Records"])
        return {"batchItemFailures": []}

    worker = QueueWorker("q", handler, wait_seconds=0, client=sqs)
    # WHEN it runs in the background until the queue is empty
    with worker.running():
        deadline = time.monotonic() + 5
        while len(sqs.deleted) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    # THEN every message was processed once and deleted
    assert sorted(processed) == ["a", "b", "c"]
    assert sorted(sqs.deleted) == ["r0", "r1", "r2"]


# --- towerlight serve's app ------------------------------------------------------------------------


def test_the_local_app_serves_both_apis_with_their_error_handlers_and_docs() -> None:
    # GIVEN the recommend and track apps combined as `towerlight serve` does
    app = create_local_app(create_recommend_app(), create_track_app())
    asgi = Mangum(app, lifespan="off")
    not_json = json.loads((EVENTS_DIR / "track_not_json.json").read_text())
    docs = json.loads((EVENTS_DIR / "health_track.json").read_text())
    docs["rawPath"] = docs["requestContext"]["http"]["path"] = "/docs"
    # WHEN the OpenAPI document is built and requests are made
    paths = set(app.openapi()["paths"])
    refused = asgi(not_json, LocalLambdaContext())
    page = asgi(docs, LocalLambdaContext())
    # THEN every route of both functions is there once, track's 400 handler came along, and /docs serves
    assert paths == {"/health", "/recommendations/{user_id}", "/items/{item_id}/similar", "/rank", "/events"}
    assert refused["statusCode"] == 400
    assert json.loads(refused["body"])["error"]["code"] == "malformed_request"
    assert page["statusCode"] == 200 and "swagger" in page["body"].lower()
