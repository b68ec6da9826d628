"""Worker heartbeats: each worker process says it is alive; `/readyz` asks whether one is."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from app.db import WorkerHeartbeat, utcnow
from app.db.session import UnitOfWork

FORGET_AFTER = timedelta(days=1)  # rows of workers that died without saying goodbye


def beat(uow: UnitOfWork, worker_id: str, *, hostname: str, pid: int) -> None:
    row = uow.session.get(WorkerHeartbeat, worker_id)
    if row is None:
        uow.session.add(WorkerHeartbeat(id=worker_id, hostname=hostname, pid=pid))
        uow.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < utcnow() - FORGET_AFTER))
    else:
        row.seen_at = utcnow()


def forget(uow: UnitOfWork, worker_id: str) -> None:
    """A worker shutting down cleanly: it is gone now, not in three heartbeats."""
    uow.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id))


def worker_status(uow: UnitOfWork, *, gone_after: timedelta) -> str:
    """"ok" if some worker beat within `gone_after`, else what is wrong, in words."""
    last = uow.session.scalar(select(WorkerHeartbeat.seen_at).order_by(WorkerHeartbeat.seen_at.desc()).limit(1))
    if last is None:
        return "unavailable: no worker is running"
    silent = utcnow() - last
    if silent > gone_after:
        return f"unavailable: no worker heartbeat for {silent.total_seconds():.0f} s"
    return "ok"
