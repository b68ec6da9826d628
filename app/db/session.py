"""Engine and unit of work.

Services take a UnitOfWork and never commit; whoever opened it (a request dependency or a task
wrapper) commits or rolls back. Four orchestrations in app/services open their own short units
of work instead, because each must commit a claim before slow work so that no transaction is held
through it and other workers see the claim: `processing.process_photos` (claim, CNN, write),
`notify.send_delivery` (claim, SMTP, record), `webhooks.deliver` (claim, HTTP POST, record)
and `uploads.Uploader` (one photo per transaction
while a large upload is read). tests/worker/test_layering.py keeps that list exhaustive. Work that must only happen once the rows are visible to other
processes, like sending a Celery task, is registered with `after_commit` and dropped on rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from app.jobs import TaskSender

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout_s: float = 10,
                poolclass: type[Pool] | None = None) -> Engine:
    """A waiting request gives up after `pool_timeout_s` (sqlalchemy's TimeoutError, answered 503
    with Retry-After by app/errors.py) instead of hanging for the default 30 s."""
    pool = ({"poolclass": poolclass} if poolclass is not None else
            {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout_s})
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class UnitOfWork:
    def __init__(self, session: Session, sender: TaskSender | None = None) -> None:
        self.session = session
        self.sender = sender
        self._after_commit: list[Callable[[], None]] = []
        self._collected: dict[str, tuple[set, Callable[[set], None]]] = {}

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def send_task(self, task_name: str, *args: object) -> None:
        """Queue a Celery task once this transaction has committed (never if it rolls back)."""
        if self.sender is None:
            raise RuntimeError("this unit of work has no task sender")
        sender = self.sender
        self.after_commit(lambda: sender.send(task_name, *args))

    def collect(self, name: str, flush: Callable[[set], None]) -> set:
        """A set of things to act on once per transaction: `flush(items)` runs just before commit,
        however often they were added (e.g. one webhook event per runner whose matches changed)."""
        if name not in self._collected:
            self._collected[name] = (set(), flush)
        return self._collected[name][0]

    def flush_collected(self) -> None:
        while self._collected:
            _, (items, flush) = self._collected.popitem()
            if items:
                flush(items)
        self.session.flush()

    def run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the rows are committed; the sweeper re-sends what was not sent
                log.exception("after-commit callback failed")


@contextmanager
def unit_of_work(
    make_session: sessionmaker[Session], sender: TaskSender | None = None
) -> Iterator[UnitOfWork]:
    session = make_session()
    uow = UnitOfWork(session, sender)
    try:
        yield uow
        uow.flush_collected()
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    uow.run_after_commit()
