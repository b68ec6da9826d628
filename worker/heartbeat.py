"""A Celery worker bootstep: while the worker runs, its main process writes a heartbeat row every
FINISHLINE_WORKER_HEARTBEAT_S (app/services/workers.py); a clean shutdown removes it.

It runs in the worker's main process, the one that takes messages from the broker, so a worker
whose consumer died or hangs stops beating. The engine has no pool (NullPool): no connection is
left open for the pool's child processes to inherit when they fork.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import bootsteps
from sqlalchemy.pool import NullPool

from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import workers

log = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.worker_id = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker) -> None:
        settings = worker.app.finishline_settings
        self.hostname, self.pid = worker.hostname, os.getpid()
        self.worker_id = f"{worker.hostname}/{self.pid}"
        self.interval = settings.worker_heartbeat_s
        self.engine = make_engine(settings.resolved_database_url, poolclass=NullPool)
        self.sessions = make_sessionmaker(self.engine)
        self._beat()  # at once: /readyz knows the worker is up before the first interval ends
        self._thread = threading.Thread(target=self._run, name="finishline-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            try:
                with unit_of_work(self.sessions) as uow:
                    workers.forget(uow, self.worker_id)
            except Exception as exc:
                log.warning("could not remove this worker's heartbeat: %r", exc)
            self.engine.dispose()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def _beat(self) -> None:
        try:
            with unit_of_work(self.sessions) as uow:
                workers.beat(uow, self.worker_id, hostname=self.hostname, pid=self.pid)
        except Exception as exc:  # the database is down: /readyz says so on its own
            log.warning("worker heartbeat not written: %r", exc)
