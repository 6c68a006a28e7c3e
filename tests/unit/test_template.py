"""template.yaml, samconfig.toml and the build files: the invariants cfn-lint does not check.

``sam validate --lint`` and cfn-lint with the serverless rules run in infra/check_template.sh; this file
asserts what they miss: queue timing against the ingest function, parameter ranges (and that every setting
the serving code reads is a parameter defaulting to the code's value), routes and their
auth, least-privilege policies, an events/ file per function, and that the layer and image pins follow
pyproject.toml.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from mangum import Mangum
from packaging.requirements import Requirement

from infra.function_sizes import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
PARAMETERS: dict[str, dict[str, Any]] = TEMPLATE["Parameters"]
GLOBAL_FUNCTION: dict[str, Any] = TEMPLATE["Globals"]["Function"]
FUNCTIONS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}
ZIP_FUNCTIONS = {k: v for k, v in FUNCTIONS.items() if v["Properties"].get("PackageType") != "Image"}
ADMIN_PREFIX = "/admin/"
MAX_API_TIMEOUT_S = 30  # API Gateway's integration timeout
FOURTEEN_DAYS_S = 14 * 86_400


def props(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id]["Properties"]


def http_events(function: str) -> dict[str, dict[str, Any]]:
    events = props(function).get("Events", {})
    return {name: e["Properties"] for name, e in events.items() if e["Type"] == "HttpApi"}


def short_name(function: str) -> str:
    """``RecommendFunction`` -> ``recommend``."""
    return function.removesuffix("Function").lower()


def references(node: Any) -> set[str]:
    """Every logical id or parameter an intrinsic expression names (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
            else:
                found |= references(value)
    elif isinstance(node, list):
        for value in node:
            found |= references(value)
    return found


def parameter_of(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict) and "Ref" in value, f"{value!r} should be a !Ref to a parameter"
    return PARAMETERS[value["Ref"]]


def statements(function: str) -> list[dict[str, Any]]:
    return [s for policy in props(function).get("Policies", []) if "Statement" in policy for s in policy["Statement"]]


def policy_templates(function: str) -> dict[str, dict[str, Any]]:
    return {
        name: args
        for policy in props(function).get("Policies", [])
        if "Statement" not in policy
        for name, args in policy.items()
    }


def actions(function: str) -> set[str]:
    found: set[str] = set()
    for statement in statements(function):
        action = statement["Action"]
        found |= {action} if isinstance(action, str) else set(action)
    return found


# ------------------------------------------------------------------------------------- functions


def test_every_zip_function_runs_python312_from_functions_dir_with_the_runtime_layer() -> None:
    # GIVEN the zip functions  THEN each is functions/<name>/app.py:handler on python3.12 with the layer
    assert set(ZIP_FUNCTIONS) == {"RecommendFunction", "TrackFunction", "AdminFunction", "IngestFunction"}
    for name, function in ZIP_FUNCTIONS.items():
        p = function["Properties"]
        assert p["Runtime"] == "python3.12", name
        assert p["Handler"] == "app.handler", name
        assert p["CodeUri"] == f"functions/{short_name(name)}/", name
        assert (ROOT / p["CodeUri"] / "app.py").is_file(), f"{name}: no app.py"
        assert p["Layers"] == [{"Fn::If": ["IsArm64", {"Ref": "RuntimeLayerArm64"}, {"Ref": "RuntimeLayerX8664"}]}]


def test_architecture_is_a_parameter_defaulting_to_arm64_and_layers_follow_it() -> None:
    architecture = PARAMETERS["Architecture"]
    assert architecture["Default"] == "arm64"
    assert sorted(architecture["AllowedValues"]) == ["arm64", "x86_64"]
    assert GLOBAL_FUNCTION["Architectures"] == [{"Ref": "Architecture"}]
    for layer, arch, condition in (
        ("RuntimeLayerArm64", "arm64", "IsArm64"),
        ("RuntimeLayerX8664", "x86_64", "IsX8664"),
    ):
        resource = RESOURCES[layer]
        assert resource["Condition"] == condition
        assert resource["Properties"]["CompatibleArchitectures"] == [arch]
        assert resource["Properties"]["ContentUri"] == "layers/"
        assert resource["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": arch}
        assert f"build-{layer}:" in (ROOT / "layers" / "Makefile").read_text()


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_has_explicit_memory_and_timeout_and_a_log_group_with_retention(function: str) -> None:
    p = props(function)
    assert "MemorySize" in p and "Timeout" in p, function
    [log_group] = [
        r
        for r in RESOURCES.values()
        if r["Type"] == "AWS::Logs::LogGroup"
        and r["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
    ]
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert GLOBAL_FUNCTION["Tracing"] == "Active"


def test_api_functions_time_out_before_api_gateway_does() -> None:
    api_functions = [name for name in FUNCTIONS if http_events(name)]
    assert sorted(api_functions) == ["AdminFunction", "RecommendFunction", "TrackFunction"]
    for name in api_functions:
        assert props(name)["Timeout"] < MAX_API_TIMEOUT_S, name


def test_recommend_memory_and_tmp_are_parameters_within_lambdas_limits() -> None:
    recommend = props("RecommendFunction")
    memory = parameter_of(recommend["MemorySize"])
    storage = parameter_of(recommend["EphemeralStorage"]["Size"])
    assert memory["Default"] == 1769 and (memory["MinValue"], memory["MaxValue"]) == (512, 10240)
    assert storage["Default"] == 1024 and (storage["MinValue"], storage["MaxValue"]) == (512, 10240)


def test_globals_declare_the_environment_contract() -> None:
    variables = GLOBAL_FUNCTION["Environment"]["Variables"]
    assert variables["TOWERLIGHT_STORE"] == {"Fn::Sub": "s3://${ArtifactsBucket}/towerlight"}
    assert variables["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
    assert variables["EVENTS_QUEUE_URL"] == {"Ref": "EventsQueue"}
    assert parameter_of(variables["MODEL_REFRESH_SECONDS"])["Default"] == 60
    assert variables["POWERTOOLS_SERVICE_NAME"] == "towerlight"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Towerlight"
    assert parameter_of(variables["POWERTOOLS_LOG_LEVEL"])["Default"] == "INFO"
    assert props("AdminFunction")["Environment"]["Variables"]["RETRAIN_FUNCTION_NAME"] == {"Ref": "RetrainFunction"}


# Read by the code but not an operator's choice: where /tmp files go, where migrations are read from.
INTERNAL_SETTINGS = {"TOWERLIGHT_CACHE_DIR", "TOWERLIGHT_MIGRATIONS_DIR"}


def declared_settings() -> dict[str, dict[str, Any]]:
    """Every TOWERLIGHT_* variable the template passes from a parameter, to any function, with that parameter."""
    environments = [GLOBAL_FUNCTION["Environment"]["Variables"]]
    environments += [f["Properties"].get("Environment", {}).get("Variables", {}) for f in FUNCTIONS.values()]
    return {
        name: parameter_of(value)
        for variables in environments
        for name, value in variables.items()
        if name.startswith("TOWERLIGHT_") and isinstance(value, dict) and "Ref" in value and value["Ref"] in PARAMETERS
    }


def test_every_setting_the_serving_code_reads_is_declared_in_the_template() -> None:
    read = {
        m
        for path in (ROOT / "layers").rglob("*.py")
        for m in re.findall(r'"(TOWERLIGHT_[A-Z0-9_]+)"', path.read_text())
    }
    declared = set(declared_settings()) | {"TOWERLIGHT_STORE"}  # the store is derived from the bucket, not a parameter
    assert read - INTERNAL_SETTINGS <= declared, f"not in template.yaml: {sorted(read - INTERNAL_SETTINGS - declared)}"


def test_setting_parameters_default_to_what_the_code_does_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from towerlight.bandit.policy import BestAvailable, auto_policy
    from towerlight.config import get_settings
    from towerlight.experiments import current_experiment
    from towerlight.exploration.settings import exploration_settings
    from towerlight.recommend.rules import DEFAULT_MAX_PROMOTED

    # GIVEN the code's settings with none of the template's variables set
    settings = declared_settings()
    for name in settings:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    unset = get_settings()
    # WHEN each variable is set to its parameter's default, as CloudFormation passes it (a string)
    for name, parameter in settings.items():
        monkeypatch.setenv(name, str(parameter["Default"]))
    get_settings.cache_clear()
    # THEN nothing changes: the same settings, no bandit, no experiment, the code's hybrid weights and cap
    assert get_settings() == unset
    assert isinstance(auto_policy(), BestAvailable)
    assert current_experiment() is None
    assert exploration_settings() is None  # item exploration off
    assert settings["TOWERLIGHT_HYBRID_WEIGHTS"]["Default"] == ""  # empty: DEFAULT_HYBRID_WEIGHTS
    assert settings["TOWERLIGHT_MAX_PROMOTED"]["Default"] == DEFAULT_MAX_PROMOTED
    get_settings.cache_clear()


def test_database_and_vpc_are_parameters_with_an_optional_vpc() -> None:
    assert "Default" not in PARAMETERS["DatabaseSecretArn"]  # required: serving needs Postgres
    assert PARAMETERS["SubnetIds"]["Default"] == PARAMETERS["SecurityGroupIds"]["Default"] == ""
    assert references(TEMPLATE["Conditions"]["InVpc"]) == {"SubnetIds", "SecurityGroupIds"}
    condition, in_vpc, outside = GLOBAL_FUNCTION["VpcConfig"]["Fn::If"]
    assert condition == "InVpc"
    assert in_vpc == {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
    assert outside == {"Ref": "AWS::NoValue"}


# ------------------------------------------------------------------------------------- queue and ingest


def test_events_queue_visibility_covers_six_ingest_timeouts_plus_the_longest_batching_window() -> None:
    # GIVEN the ingest function's timeout and the largest batching window the parameter allows
    [event] = props("IngestFunction")["Events"].values()
    window = parameter_of(event["Properties"]["MaximumBatchingWindowInSeconds"])
    timeout = props("IngestFunction")["Timeout"]
    # THEN a batch still being processed is never visible to a second consumer
    assert props("EventsQueue")["VisibilityTimeout"] >= 6 * timeout + window["MaxValue"]


def test_events_queue_redrives_to_a_dead_letter_queue_kept_14_days() -> None:
    redrive = props("EventsQueue")["RedrivePolicy"]
    assert redrive["maxReceiveCount"] >= 5
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}
    assert props("EventsDeadLetterQueue")["MessageRetentionPeriod"] == FOURTEEN_DAYS_S
    assert props("RetrainDeadLetterQueue")["MessageRetentionPeriod"] == FOURTEEN_DAYS_S


def test_ingest_event_reports_batch_item_failures_with_tunable_batching() -> None:
    [event] = props("IngestFunction")["Events"].values()
    assert event["Type"] == "SQS"
    p = event["Properties"]
    assert p["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    batch = parameter_of(p["BatchSize"])
    window = parameter_of(p["MaximumBatchingWindowInSeconds"])
    concurrency = parameter_of(p["ScalingConfig"]["MaximumConcurrency"])
    assert 1 <= batch["MinValue"] <= batch["Default"] <= batch["MaxValue"] <= 10_000
    # SQS requires a batching window of at least 1 s for batches over 10
    assert batch["MaxValue"] <= 10 or window["MinValue"] >= 1
    assert 0 <= window["MinValue"] <= window["Default"] <= window["MaxValue"] <= 300
    # Lambda accepts MaximumConcurrency 2..1000
    assert 2 <= concurrency["MinValue"] <= concurrency["Default"] <= concurrency["MaxValue"] <= 1000


# ------------------------------------------------------------------------------------- retrain


def test_retrain_runs_on_a_schedule_keyed_by_the_scheduler_execution_id() -> None:
    retrain = props("RetrainFunction")
    [schedule] = retrain["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    p = schedule["Properties"]
    rate = parameter_of(p["ScheduleExpression"])
    assert re.fullmatch(rate["AllowedPattern"], rate["Default"]) and rate["Default"].startswith("rate(")
    payload = json.loads(p["Input"])
    assert payload["execution_id"] == "<aws.scheduler.execution-id>"
    assert payload["trigger"] == "schedule"
    assert p["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert p["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["RetrainDeadLetterQueue", "Arn"]}}
    assert references(p["Name"]) == {"AWS::StackName"}  # schedule names are per account
    assert retrain["ReservedConcurrentExecutions"] == 1
    assert retrain["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["RetrainDeadLetterQueue", "Arn"]
    }


def test_the_scheduled_event_file_has_the_scheduler_input_shape() -> None:
    [schedule] = props("RetrainFunction")["Events"].values()
    expected = set(json.loads(schedule["Properties"]["Input"]))
    assert set(json.loads((ROOT / "events" / "retrain_scheduled.json").read_text())) == expected


def test_retrain_is_the_container_image_and_its_dockerfile_only_copies_what_dockerignore_lets_in() -> None:
    retrain = RESOURCES["RetrainFunction"]
    assert retrain["Properties"]["PackageType"] == "Image"
    assert retrain["Metadata"]["DockerContext"] == "."
    dockerfile = ROOT / retrain["Metadata"]["Dockerfile"]
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    sources = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("COPY ")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


# ------------------------------------------------------------------------------------- HTTP API


def test_http_api_has_default_stage_cors_throttling_and_access_logs() -> None:
    api = props("HttpApi")
    assert api["StageName"] == "$default"
    assert api["CorsConfiguration"]["AllowOrigins"] == {"Ref": "CorsAllowOrigins"}
    routed = {event["Method"].upper() for f in FUNCTIONS for event in http_events(f).values()}
    assert routed <= set(api["CorsConfiguration"]["AllowMethods"]), "a route's method is missing from CORS"
    settings = api["DefaultRouteSettings"]
    assert "ThrottlingBurstLimit" in settings and "ThrottlingRateLimit" in settings
    assert json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", api["AccessLogSettings"]["Format"]))
    assert api["Auth"]["EnableIamAuthorizer"] is True


def test_every_admin_route_requires_aws_iam_and_no_other_route_does() -> None:
    for function in FUNCTIONS:
        for name, event in http_events(function).items():
            assert event["ApiId"] == {"Ref": "HttpApi"}
            assert event["PayloadFormatVersion"] == "2.0", f"{function}/{name}"
            authorizer = event.get("Auth", {}).get("Authorizer")
            if event["Path"].startswith(ADMIN_PREFIX):
                assert function == "AdminFunction" and authorizer == "AWS_IAM", f"{function}/{name}"
            else:
                assert authorizer is None, f"{function}/{name} is public and must not name an authorizer"
    assert all(e["Path"].startswith(ADMIN_PREFIX) for e in http_events("AdminFunction").values())


def test_routes_are_unique_and_each_is_served_by_its_function_app() -> None:
    # GIVEN the routes API Gateway sends to each function
    seen: set[tuple[str, str]] = set()
    for function in FUNCTIONS:
        routes = {(e["Method"], e["Path"]) for e in http_events(function).values()}
        assert not routes & seen, f"{function} repeats a route"
        seen |= routes
        if not routes:
            continue
        # WHEN the function's FastAPI app is loaded THEN it has a route for each
        module = importlib.import_module(f"functions.{short_name(function)}.app")
        [asgi] = [v for v in vars(module).values() if isinstance(v, Mangum)]
        served = {(m, r.path) for r in asgi.app.routes for m in getattr(r, "methods", ()) or ()}
        assert routes <= served, f"{function}: {sorted(routes - served)} not served"


def test_every_function_has_an_events_file() -> None:
    for function in FUNCTIONS:
        name = short_name(function)
        files = sorted((ROOT / "events").glob(f"{name}_*.json")) + sorted((ROOT / "events").glob(f"health_{name}.json"))
        assert files, f"no events/{name}_*.json for {function}"
        for path in files:
            json.loads(path.read_text())


def test_admin_events_carry_the_iam_authorizer_context_and_match_a_template_route() -> None:
    routes = {f"{e['Method']} {e['Path']}" for e in http_events("AdminFunction").values()}
    files = sorted((ROOT / "events").glob("admin_*.json"))
    assert len(files) == len(routes)
    for path in files:
        event = json.loads(path.read_text())
        assert event["version"] == "2.0"
        assert event["routeKey"] in routes, path.name
        assert event["requestContext"]["authorizer"]["iam"]["userArn"].startswith("arn:aws:")


# ------------------------------------------------------------------------------------- storage and IAM


def test_artifacts_bucket_is_versioned_encrypted_and_private() -> None:
    bucket = props("ArtifactsBucket")
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert RESOURCES["ArtifactsBucket"]["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_policies_name_template_resources_never_star(function: str) -> None:
    named = set(RESOURCES) | set(PARAMETERS)
    for policy in props(function).get("Policies", []):
        assert isinstance(policy, dict), f"{function}: managed policy {policy!r} is not least privilege"
        if "Statement" in policy:
            for statement in policy["Statement"]:
                assert statement["Effect"] == "Allow"
                resources = (
                    statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                )
                for resource in resources:
                    assert resource != "*" and references(resource) and references(resource) <= named, statement
                action = statement["Action"]
                assert "*" not in (action if isinstance(action, str) else "".join(action)), statement
        else:
            for name, args in policy.items():
                assert args and all(references(v) <= named and references(v) for v in args.values()), name


def test_each_function_gets_only_what_it_needs() -> None:
    # track only sends to the queue
    assert policy_templates("TrackFunction") == {
        "SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}}
    }
    assert not statements("TrackFunction")
    # recommend only reads the bucket (and the database secret), and sends impressions to the events queue
    assert actions("RecommendFunction") == {"s3:GetObject", "s3:ListBucket"}
    assert policy_templates("RecommendFunction") == {
        "SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}},
        "AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "DatabaseSecretArn"}},
    }
    # ingest writes only item exploration's VW models; admin writes only CURRENT; retrain publishes models
    assert actions("IngestFunction") == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    ingest_writes = [s for s in statements("IngestFunction") if "s3:PutObject" in s["Action"]]
    assert [s["Resource"] for s in ingest_writes] == [{"Fn::Sub": "${ArtifactsBucket.Arn}/towerlight/bandit/vw/*"}]
    admin_writes = [s for s in statements("AdminFunction") if s["Action"] == "s3:PutObject"]
    assert [s["Resource"] for s in admin_writes] == [{"Fn::Sub": "${ArtifactsBucket.Arn}/towerlight/models/CURRENT"}]
    assert actions("RetrainFunction") == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    assert policy_templates("AdminFunction")["LambdaInvokePolicy"] == {"FunctionName": {"Ref": "RetrainFunction"}}
    # every function that reads Postgres may read exactly the database secret
    for function in ("RecommendFunction", "AdminFunction", "IngestFunction", "RetrainFunction"):
        secret = policy_templates(function)["AWSSecretsManagerGetSecretValuePolicy"]
        assert secret == {"SecretArn": {"Ref": "DatabaseSecretArn"}}, function


def test_outputs_name_the_api_queue_and_bucket() -> None:
    outputs = TEMPLATE["Outputs"]
    assert references(outputs["ApiUrl"]["Value"]) >= {"HttpApi"}
    assert outputs["EventsQueueUrl"]["Value"] == {"Ref": "EventsQueue"}
    assert outputs["ArtifactsBucketName"]["Value"] == {"Ref": "ArtifactsBucket"}


# ------------------------------------------------------------------------------------- build files


def _pins(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return {r.name.lower(): r for r in requirements}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _check_pins(pins: dict[str, Requirement], declared: dict[str, Requirement]) -> None:
    for name, pin in pins.items():
        assert name in declared, f"{name} is pinned but not declared in pyproject.toml"
        [spec] = list(pin.specifier)
        assert spec.operator == "==", f"{name} must be pinned exactly"
        assert declared[name].specifier.contains(spec.version, prereleases=True), f"{pin} outside {declared[name]}"
        assert pin.extras == declared[name].extras, f"{name}: extras differ from pyproject.toml"


def test_layer_requirements_pin_exactly_the_runtime_dependencies() -> None:
    declared = {Requirement(d).name.lower(): Requirement(d) for d in _pyproject()["dependencies"]}
    pins = _pins(ROOT / "layers" / "requirements.txt")
    assert set(pins) == set(declared)
    _check_pins(pins, declared)
    assert not set(pins) & {"torch", "scikit-learn", "scipy", "pandas"}


def test_retrain_image_requirements_pin_the_offline_extra_less_local_tools() -> None:
    local_only = {"pgserver", "uvicorn", "moto", "matplotlib"}  # matplotlib: towerlight evaluate's plots only
    declared = {Requirement(d).name.lower(): Requirement(d) for d in _pyproject()["optional-dependencies"]["offline"]}
    pins = _pins(ROOT / "functions" / "retrain" / "requirements.txt")
    assert set(pins) == set(declared) - local_only
    _check_pins(pins, declared)


def test_layer_keeps_the_botocore_models_of_every_client_the_serving_code_creates() -> None:
    # GIVEN the services whose models layers/Makefile keeps in the layer
    makefile = (ROOT / "layers" / "Makefile").read_text()
    kept = set(re.search(r"^BOTOCORE_SERVICES := (.+)$", makefile, re.MULTILINE).group(1).split())
    # WHEN the serving code's boto3 clients are listed
    sources = [*(ROOT / "layers").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    used = {m for path in sources for m in re.findall(r"\.client\(\s*[\"']([a-z0-9-]+)[\"']", path.read_text())}
    # THEN each has its model (and aws-xray-sdk's sampling client too)
    assert used, "no boto3 client found: the pattern is out of date"
    assert used | {"xray"} <= kept


def test_samconfig_follows_sam_conventions_without_account_values() -> None:
    text = (ROOT / "samconfig.toml").read_text()
    config = tomllib.loads(text)
    assert config["version"] == 0.1
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True
    assert "CAPABILITY_IAM" in deploy["capabilities"]
    assert deploy["resolve_image_repos"] is True  # the retrain image
    assert config["default"]["validate"]["parameters"]["lint"] is True
    assert not re.search(r"\b\d{12}\b", text), "an AWS account id in samconfig.toml"
    keys = {
        key for env in config.values() if isinstance(env, dict) for cmd in env.values() for key in cmd["parameters"]
    }
    assert not keys & {"region", "parameter_overrides", "profile"}, "deploy-specific values belong to your checkout"
