"""Review C5: locks are taken in one order (event, runner, delivery), so an e-mail being claimed
while its runner erases their data never deadlocks on PostgreSQL.

Two real connections, interleaved on purpose: the claim stops right after its first row lock,
the erasure runs until it waits on a lock, then the claim goes on. With the claim locking the
delivery first and the runner second (the old order) PostgreSQL reports a deadlock and one side
fails (the runner saw a 503 page); in one order the erasure waits for the claim and both succeed.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text

from app.db import Delivery, Event, Runner, utcnow
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import notify, runners
from app.storage import LocalPhotoStore
from tests.conftest import organisation_for_tests

pytestmark = pytest.mark.postgres

ROW_LOCK = re.compile(r"^\s*UPDATE\b|\bFOR (NO KEY )?UPDATE\b", re.IGNORECASE)


def test_claiming_an_email_while_the_runner_erases_their_data_does_not_deadlock(postgres_url: str,
                                                                               tmp_path: Path) -> None:
    upgrade_to_head(postgres_url)
    setup = make_sessionmaker(make_engine(postgres_url))
    with unit_of_work(setup) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name="Lock order", slug=f"lock-{time.time_ns()}",
                      match_threshold=0.48)
        uow.session.add(event)
        uow.session.flush()
        runner = Runner(event_id=event.id, name="Ana", email="ana@example.org", consent_at=utcnow())
        uow.session.add(runner)
        uow.session.flush()
        delivery = Delivery(event_id=event.id, runner_id=runner.id, photo_ids=["p1"])
        uow.session.add(delivery)
        uow.session.flush()
        runner_id, delivery_id = runner.id, delivery.id

    claim_engine, erase_engine = make_engine(postgres_url), make_engine(postgres_url)
    first_lock_taken, go_on = threading.Event(), threading.Event()

    def pause_after_first_row_lock(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if ROW_LOCK.search(statement) and not first_lock_taken.is_set():
            first_lock_taken.set()
            go_on.wait(30)

    sa_event.listen(claim_engine, "after_cursor_execute", pause_after_first_row_lock)
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            with unit_of_work(make_sessionmaker(claim_engine)) as uow:
                notify._claim(uow, delivery_id, task_id="task-1", message_id="<m1@example.org>")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def erase() -> None:
        try:
            with unit_of_work(make_sessionmaker(erase_engine)) as uow:
                runners.delete_runner(uow, LocalPhotoStore(tmp_path / "photos"), runner_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    claimer = threading.Thread(target=claim)
    claimer.start()
    assert first_lock_taken.wait(30)
    eraser = threading.Thread(target=erase)
    eraser.start()
    with setup() as session:  # until the erasure waits on a row the claim holds (or is done)
        deadline = time.monotonic() + 20
        while eraser.is_alive() and time.monotonic() < deadline:
            waiting = session.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            if waiting:
                break
            time.sleep(0.05)
            session.rollback()
    go_on.set()
    claimer.join(60)
    eraser.join(60)
    assert not errors, errors
    with setup() as session:
        assert session.scalar(select(Runner.id).where(Runner.id == runner_id)) is None
        assert session.scalar(select(Delivery.id).where(Delivery.id == delivery_id)) is None
    for engine in (claim_engine, erase_engine):
        engine.dispose()
