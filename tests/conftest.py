"""Shared fixtures: real Postgres (fixtures_pg), real S3/SQS endpoint from moto's server (fixtures_s3)."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest_plugins = ["fixtures_pg", "fixtures_s3", "fixtures_model"]

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


def load_event(name: str) -> dict[str, Any]:
    """An event file from events/, as `sam local invoke -e` would pass it."""
    return json.loads((EVENTS_DIR / name).read_text())


def fresh_handler(function: str) -> ModuleType:
    """``functions/<function>/app.py`` imported afresh, as in a new execution environment.

    Its module-level Powertools objects then read the calling test's environment, whatever other tests
    imported before.
    """
    name = f"functions.{function}.app"
    sys.modules.pop(name, None)  # not reload(): a module loaded from its file path has no parent package
    return importlib.import_module(name)


@dataclass
class LambdaContext:
    function_name: str = "test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()
