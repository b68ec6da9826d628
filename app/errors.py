"""Domain errors with a stable `code`, and the one place that renders them as problem+json.

AppError
 ├─ Unauthorized (401)        ├─ Forbidden (403)         ├─ NotFound (404)          ├─ Conflict (409)
 ├─ PayloadTooLarge (413)     ├─ Unprocessable (422)     ├─ TooManyRequests (429)
 └─ ServiceUnavailable (503)
Services raise these; routes never build error responses themselves.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    status = 400
    title = "Bad request"
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, retry_after: int | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)
        self.extra = extra or {}  # more members of the problem body (e.g. `faces` of multiple_faces)
        if code:
            self.code = code


class Unauthorized(AppError):
    status, title, code = 401, "Unauthorized", "unauthorized"


class Forbidden(AppError):
    """Known caller, not allowed here (a partner key outside its scope). Never for another
    organisation's rows: those are NotFound, so their ids reveal nothing."""

    status, title, code = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, code = 404, "Not found", "not_found"


class Conflict(AppError):
    status, title, code = 409, "Conflict", "conflict"


class PayloadTooLarge(AppError):
    status, title, code = 413, "Payload too large", "payload_too_large"


class Unprocessable(AppError):
    status, title, code = 422, "Unprocessable content", "invalid"


class TooManyRequests(AppError):
    status, title, code = 429, "Too many requests", "rate_limited"


class ServiceUnavailable(AppError):
    status, title, code = 503, "Service unavailable", "unavailable"


def problem_body(status: int, title: str, detail: str, code: str, extra: dict | None = None) -> dict:
    return {**(extra or {}), "type": f"https://finishline.dev/problems/{code}", "title": title, "status": status,
            "detail": detail, "code": code}


def problem(status: int, title: str, detail: str, code: str, headers: dict | None = None,
            extra: dict | None = None) -> JSONResponse:
    return JSONResponse(problem_body(status, title, detail, code, extra), status_code=status,
                        media_type=PROBLEM_JSON, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (Starlette's own Allow names one route's only)."""
    methods = [method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
               if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                      for route in request.app.router.routes)]
    return ", ".join(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return problem(exc.status, exc.title, exc.detail, exc.code, headers or None, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return problem(422, "Unprocessable content", "; ".join(parts) or "invalid request", "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "malformed_body", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "payload_too_large"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem(exc.status_code, str(exc.detail), str(exc.detail),
                       codes.get(exc.status_code, f"http_{exc.status_code}"), headers or None)

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return problem(503, "Service unavailable", "The database is unavailable; try again shortly.",
                       "database_unavailable", {"Retry-After": "5"})

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("no free database connection: %s", exc)
        return problem(503, "Service unavailable", "The server is busy; try again shortly.", "overloaded",
                       {"Retry-After": "5"})

    @app.exception_handler(BrokerError)
    async def _broker_down(_: Request, exc: BrokerError) -> JSONResponse:
        log.warning("broker unavailable: %s", exc)
        return problem(503, "Service unavailable", "The task queue is unavailable; try again shortly.",
                       "broker_unavailable", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "Internal server error", "An unexpected error occurred.", "internal_error")
