from __future__ import annotations

from datetime import timedelta

from celery import Celery
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.db.session import unit_of_work
from app.services import workers

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def check_broker(celery: Celery) -> None:
    """Connect to the broker once (one quick retry); raises kombu's OperationalError if it is down."""
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0, timeout=2)


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Readiness: the database and the broker answer, and a worker is alive (its heartbeat is
    recent), so work accepted now gets done; 503 with what is wrong otherwise."""
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
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)
