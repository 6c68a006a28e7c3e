"""X-Ray tracing of a Lambda handler, with the X-Ray SDK imported only when tracing is on.

Powertools' ``Tracer`` imports the X-Ray SDK as soon as it is created, even when tracing is disabled:
about a quarter of a second of every cold start. ``traced`` applies Powertools' own rule first (off
when ``POWERTOOLS_TRACE_DISABLED`` is true, outside Lambda, and under SAM local or Chalice) and only
then creates a ``Tracer``.

Example::

    @traced("recommend", capture_response=False)
    def handler(event, context): ...
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

Handler = TypeVar("Handler", bound=Callable[..., Any])

_TRUE = frozenset({"1", "y", "yes", "t", "true", "on"})  # Powertools' truthy values


def tracing_enabled() -> bool:
    """Whether Powertools' ``Tracer`` would trace here (see the module docstring)."""
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in _TRUE:
        return False
    in_lambda = bool(os.environ.get("LAMBDA_TASK_ROOT"))
    return in_lambda and not (os.environ.get("AWS_SAM_LOCAL") or os.environ.get("AWS_CHALICE_CLI_MODE"))


def traced(service: str, **options: Any) -> Callable[[Handler], Handler]:
    """``Tracer(service=service).capture_lambda_handler(**options)`` when tracing is on, else the handler itself."""

    def decorate(handler: Handler) -> Handler:
        if not tracing_enabled():
            return handler
        from aws_lambda_powertools import Tracer

        return Tracer(service=service).capture_lambda_handler(**options)(handler)  # type: ignore[no-any-return]

    return decorate
