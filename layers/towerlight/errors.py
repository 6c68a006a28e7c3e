"""Domain errors. One table (``HTTP_STATUS``) maps them to HTTP statuses; handlers never build errors by hand."""

from __future__ import annotations

from typing import Any


class TowerlightError(Exception):
    """Base of every error Towerlight raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigurationError(TowerlightError):
    code = "configuration_error"


class ValidationError(TowerlightError):
    code = "invalid_request"


class MalformedRequestError(TowerlightError):
    """The request body is not JSON at all."""

    code = "malformed_request"


class PayloadTooLargeError(TowerlightError):
    code = "payload_too_large"


class NotFoundError(TowerlightError):
    code = "not_found"


class ServiceUnavailableError(TowerlightError):
    """A dependency (queue, database, another function) cannot be reached right now; retry later."""

    code = "service_unavailable"


class ModelUnavailableError(ServiceUnavailableError):
    code = "model_unavailable"


class ArtifactError(TowerlightError):
    """An artifact is missing, corrupted (checksum mismatch) or of an unknown schema."""

    code = "artifact_error"


class VersionExistsError(ArtifactError):
    code = "version_exists"


class PointerConflictError(ArtifactError):
    """CURRENT changed between read and write (compare-and-swap lost)."""

    code = "pointer_conflict"


class QueueError(ServiceUnavailableError):
    code = "queue_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    code = "database_unavailable"


HTTP_STATUS: dict[type[TowerlightError], int] = {
    MalformedRequestError: 400,
    ValidationError: 422,
    PayloadTooLargeError: 413,
    NotFoundError: 404,
    ServiceUnavailableError: 503,
    ConfigurationError: 503,  # a function deployed without its settings cannot serve: retry once it is fixed
    PointerConflictError: 409,
    VersionExistsError: 409,
}


def http_status(error: TowerlightError) -> int:
    """The HTTP status for a domain error (500 for anything not in the table)."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_body(error: TowerlightError) -> dict[str, Any]:
    """The JSON error body of the HTTP contract: ``{"error": {"code", "message", "details"?}}``."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    return {"error": body}
