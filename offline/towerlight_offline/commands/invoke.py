"""``towerlight invoke <Function> -e events/<file>.json``: what ``sam local invoke`` does, without Docker.

The environment is the template's ``Globals.Function.Environment`` plus the function's own, as SAM
would set it; values that only CloudFormation can resolve (``!Ref``, ``!GetAtt``, ``!Sub`` ...) are
skipped, and variables already set in this shell win. The handler's own output (logs, EMF metrics)
goes to stderr; the response JSON and a Lambda-style ``REPORT`` line go to stdout.

Example::

    $ towerlight invoke Track -e events/track_single.json
    {"statusCode": 202, ...}
    REPORT RequestId: 8f5c Duration: 2.34 ms Billed Duration: 3 ms Memory Size: 512 MB Max Memory Used: 98 MB
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from towerlight.config import get_settings
from towerlight.errors import ConfigurationError
from towerlight_offline import console
from towerlight_offline.local.worker import (
    FUNCTIONS,
    LocalLambdaContext,
    function_name,
    load_function_handler,
    project_root,
)

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 128  # Lambda's defaults when the template says nothing
DEFAULT_TIMEOUT_S = 3.0


class _Intrinsic:
    """A CloudFormation short-form function such as ``!Ref X`` or ``!Sub ...``, kept unevaluated."""

    def __init__(self, tag: str, argument: Any) -> None:
        self.tag = tag
        self.argument = argument


def _intrinsic(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> _Intrinsic:
    if isinstance(node, yaml.ScalarNode):
        return _Intrinsic(tag, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return _Intrinsic(tag, loader.construct_sequence(node, deep=True))
    return _Intrinsic(tag, loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]


class _TemplateLoader(yaml.SafeLoader):
    """YAML loader that accepts CloudFormation's short-form tags instead of failing on them."""


_TemplateLoader.add_multi_constructor("!", _intrinsic)


@dataclass(frozen=True)
class FunctionConfig:
    """What the template says about one function: environment, memory and timeout."""

    name: str
    environment: dict[str, str]
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = DEFAULT_TIMEOUT_S


def read_function_config(template: Path | None, function: str) -> FunctionConfig:
    """Read ``function``'s settings from a SAM template (plain defaults when there is no template).

    The resource is the one named ``<Function>`` or ``<Function>Function``, or whose ``CodeUri`` is
    ``functions/<function>``. Environment values are strings, as Lambda passes them; a ``!Ref`` to a
    parameter takes the parameter's default; other intrinsic functions are skipped.

    Example::

        >>> read_function_config(Path("template.yaml"), "Track").environment["EVENTS_QUEUE_URL"]
        Traceback (most recent call last):
        KeyError: 'EVENTS_QUEUE_URL'  # a !Ref to the queue: only CloudFormation resolves it
    """
    name = function_name(function)
    if template is None or not template.is_file():
        return FunctionConfig(name=name, environment={})
    document = yaml.load(template.read_text(), Loader=_TemplateLoader) or {}
    parameters = _mapping(document.get("Parameters"))
    globals_ = _mapping(_mapping(document.get("Globals")).get("Function"))
    properties = _mapping(_find_function(_mapping(document.get("Resources")), name).get("Properties"))
    environment = _variables(globals_, parameters) | _variables(properties, parameters)
    memory = _value(properties.get("MemorySize", globals_.get("MemorySize")), parameters)
    timeout = _value(properties.get("Timeout", globals_.get("Timeout")), parameters)
    return FunctionConfig(
        name=name,
        environment=environment,
        memory_mb=int(memory) if memory and memory.isdigit() else DEFAULT_MEMORY_MB,
        timeout_s=float(timeout) if timeout and timeout.isdigit() else DEFAULT_TIMEOUT_S,
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _find_function(resources: dict[str, Any], name: str) -> dict[str, Any]:
    code_uri = f"functions/{name.lower()}"
    for logical_id, resource_ in resources.items():
        resource_ = _mapping(resource_)
        if resource_.get("Type") != "AWS::Serverless::Function":
            continue
        uri = _mapping(resource_.get("Properties")).get("CodeUri")
        if logical_id in (name, f"{name}Function") or (
            isinstance(uri, str) and uri.strip("./").rstrip("/") == code_uri
        ):
            return resource_
    return {}


def _value(value: Any, parameters: dict[str, Any]) -> str | None:
    """A template value as Lambda would see it, or None when only CloudFormation can compute it.

    ``!Ref`` to a template parameter resolves to its ``Default``, as ``sam local`` does.
    """
    if isinstance(value, _Intrinsic) and value.tag == "Ref" and isinstance(value.argument, str):
        value = _mapping(parameters.get(value.argument)).get("Default")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _variables(properties: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    variables = _mapping(_mapping(properties.get("Environment")).get("Variables"))
    resolved: dict[str, str] = {}
    for key, value in variables.items():
        text = _value(value, parameters)
        if text is None:
            logger.debug("skipping %s: only CloudFormation can resolve it", key)
        else:
            resolved[key] = text
    return resolved


def apply_environment(config: FunctionConfig) -> dict[str, str]:
    """Set the function's variables that this shell does not set already; returns those it set.

    Also sets what ``sam local invoke`` sets (``AWS_SAM_LOCAL``, ``AWS_LAMBDA_FUNCTION_*``), and a
    metrics namespace unless the template has one: without it Powertools fails every cold start.
    """
    runtime = {
        "POWERTOOLS_METRICS_NAMESPACE": "Towerlight",
        "AWS_SAM_LOCAL": "true",
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(config.timeout_s)),
    }
    applied = {k: v for k, v in (runtime | config.environment).items() if k not in os.environ}
    os.environ.update(applied)
    get_settings.cache_clear()  # settings are read once per process; the environment just changed
    return applied


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation, as Lambda would report it."""

    response: Any
    error: bool
    request_id: str
    duration_ms: float
    init_ms: float
    memory_mb: int

    def report_line(self) -> str:
        """Lambda's ``REPORT`` line (max memory from this process's peak resident set)."""
        max_used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
        line = (
            f"REPORT RequestId: {self.request_id} Duration: {self.duration_ms:.2f} ms "
            f"Billed Duration: {math.ceil(self.duration_ms)} ms Memory Size: {self.memory_mb} MB "
            f"Max Memory Used: {max_used} MB"
        )
        return line + (f" Init Duration: {self.init_ms:.2f} ms" if self.init_ms else "")


def invoke(function: str, event: Any, *, template: Path | None = None, root: Path | None = None) -> Invocation:
    """Load ``functions/<function>/app.py`` with the template's environment and call its handler once.

    The handler's stdout (Powertools logs, EMF metrics) is sent to stderr, as ``sam local`` does. An
    exception becomes Lambda's error payload (``errorMessage``, ``errorType``, ``stackTrace``).

    Example::

        >>> invoke("Track", load_event("health_track.json")).response["statusCode"]
        200
    """
    config = read_function_config(template, function)
    apply_environment(config)
    context = LocalLambdaContext(
        function_name=config.name, memory_limit_in_mb=config.memory_mb, timeout_seconds=config.timeout_s
    )
    with contextlib.redirect_stdout(sys.stderr):
        started = time.perf_counter()
        handler = load_function_handler(config.name, root)
        init_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        try:
            response, error = handler(event, context), False
        except Exception as exc:
            logger.debug("handler raised", exc_info=True)
            response, error = _error_payload(exc), True
        duration_ms = (time.perf_counter() - started) * 1000
    return Invocation(response, error, context.aws_request_id, duration_ms, init_ms, config.memory_mb)


def _error_payload(exc: Exception) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _read_event(path: str | None) -> Any:
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read event file {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"event file {path} is not JSON: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    root = project_root()
    template = Path(args.template) if args.template else root / "template.yaml"
    outcome = invoke(args.function, _read_event(args.event), template=template, root=root)
    console.print_json(outcome.response)
    console.say(outcome.report_line())
    return 1 if outcome.error else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invoke",
        help="run a function's handler once on an event file, like `sam local invoke` (no Docker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("function", metavar="FUNCTION", help=f"one of {', '.join(FUNCTIONS)}")
    parser.add_argument("-e", "--event", help="event JSON file (events/<file>.json; '-' reads stdin)")
    parser.add_argument("-t", "--template", help="SAM template for the environment (default: template.yaml)")
    parser.set_defaults(func=run)
