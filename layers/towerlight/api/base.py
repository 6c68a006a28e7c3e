"""What every HTTP function shares: the app factory, the error contract and ``GET /health``.

Errors are always JSON ``{"error": {"code", "message", "details"?}}``; a stack trace never leaves the
process (it goes to the log instead).

Example::

    app = create_app("recommend")

    @app.get("/recommendations/{user_id}")
    def recommend(user_id: str) -> dict: ...
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from towerlight import __version__
from towerlight.errors import TowerlightError, error_body, http_status

logger = logging.getLogger(__name__)


def _json_error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body})


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"location": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
        for err in exc.errors()
    ]


def create_app(name: str) -> FastAPI:
    """A FastAPI app with Towerlight's error contract and a health route."""
    app = FastAPI(title=f"Towerlight {name}", version=__version__)

    @app.exception_handler(TowerlightError)
    async def _domain_error(_: Request, exc: TowerlightError) -> JSONResponse:
        status = http_status(exc)
        if status >= 500:
            logger.error("request failed: %s", exc.message)
        return JSONResponse(status_code=status, content=error_body(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return _json_error(400, "malformed_request", "the request body is not valid JSON")
        return _json_error(422, "invalid_request", "the request is not valid", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _json_error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return _json_error(500, "internal_error", "an internal error occurred")

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:  # async: no thread-pool hop for the cheapest route
        return {"status": "ok", "function": name, "version": __version__}

    return app
