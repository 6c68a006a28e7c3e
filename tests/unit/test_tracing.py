"""towerlight.tracing: X-Ray only where Powertools' Tracer would trace, and nothing imported otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from towerlight.tracing import traced, tracing_enabled


@pytest.mark.parametrize(
    ("environment", "enabled"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({}, False),
    ],
)
def test_tracing_follows_powertools_rule(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], enabled: bool
) -> None:
    # GIVEN a Lambda (or local) environment
    for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # WHEN asked THEN tracing is on only inside Lambda, unless disabled or emulated
    assert tracing_enabled() is enabled


def test_without_tracing_the_handler_is_returned_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN tracing disabled
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")

    def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
        return event

    # WHEN the handler is decorated THEN it is the same function (no Tracer, no X-Ray SDK involved)
    assert traced("recommend", capture_response=False)(handler) is handler
