from __future__ import annotations

from datetime import timedelta
from typing import Literal

from celery import Celery
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

from app.api.openapi import problems
from app.db.session import unit_of_work
from app.errors import PROBLEM_JSON, problem_body
from app.services import workers

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class ReadyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "database": "ok", "broker": "ok",
                                                               "worker": "ok"}]})

    status: Literal["ok"]
    database: str
    broker: str
    worker: str


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
def healthz() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut(status="ok")


def check_broker(celery: Celery) -> None:
    """Connect to the broker once (one quick retry); raises kombu's OperationalError if it is down."""
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0, timeout=2)


@router.get("/readyz", response_model=ReadyOut, summary="Readiness", responses=problems("not_ready"))
def readyz(request: Request) -> ReadyOut | JSONResponse:
    """Readiness: the database and the broker answer, and a worker is alive (its heartbeat is
    recent), so work accepted now gets done; 503 `not_ready`, saying what is wrong, otherwise."""
    state = request.app.state
    checks: dict[str, str] = {}
    gone_after = timedelta(seconds=3 * state.settings.worker_heartbeat_s)
    try:
        with unit_of_work(state.make_session) as uow:
            uow.session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["worker"] = workers.worker_status(uow, gone_after=gone_after)
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
        checks["worker"] = "unknown: the database is unavailable"
    try:
        check_broker(state.celery)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return ReadyOut(status="ok", **checks)
    down = ", ".join(name for name, v in checks.items() if v != "ok")
    # problem+json like every error, with each check beside the standard fields
    body = {**problem_body(503, "Service unavailable", f"Not ready: {down} unavailable.", "not_ready"), **checks}
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "5"})
