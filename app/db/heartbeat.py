from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class WorkerHeartbeat(Base):
    """One row per running worker process, refreshed every FINISHLINE_WORKER_HEARTBEAT_S by the
    worker (worker/heartbeat.py) and read by `/readyz`: a worker that is gone stops refreshing."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "<celery hostname>/<pid>"
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
