"""Review C5: locks are taken in one order (event, runner, delivery; the event before the faces
and matches it guards), so two writers never deadlock on PostgreSQL.

Two real connections, interleaved on purpose: the first writer stops right after the statement
that takes its first contested lock, the second runs until it waits on a lock (or is done), then
the first goes on. In the old orders PostgreSQL reported a deadlock and one side failed (for an
erasure, the runner saw a 503 page); in one order the second simply waits for the first.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import Delivery, Event, Match, Photo, Runner, utcnow
from app.db.migrate import upgrade_to_head
from app.db.session import UnitOfWork, make_engine, make_sessionmaker, unit_of_work
from app.schemas.runner import RunnerCreate
from app.services import notify, privacy, runners
from app.services.processing import ProcessingContext, process_photos
from app.storage import LocalPhotoStore
from models.fake import FakeBackend
from tests.conftest import make_settings, organisation_for_tests
from tests.worker.test_concurrency_postgres import InlineSender, png

pytestmark = pytest.mark.postgres


Work = Callable[[sessionmaker[Session]], object]


def interleave(url: str, first: Work, second: Work, pause_after: re.Pattern[str]) -> list[BaseException]:
    """Run `first` until its first statement matching `pause_after`, then `second` until it
    waits on a lock, then let both finish; each with sessions of its own engine."""
    engines = make_engine(url), make_engine(url)
    paused, go_on = threading.Event(), threading.Event()

    def pause(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if pause_after.search(statement) and not paused.is_set():
            paused.set()
            go_on.wait(30)

    sa_event.listen(engines[0], "after_cursor_execute", pause)
    errors: list[BaseException] = []

    def run(engine: Engine, work: Work) -> None:
        try:
            work(make_sessionmaker(engine))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    one = threading.Thread(target=run, args=(engines[0], first))
    one.start()
    assert paused.wait(30), "the first writer never took its lock"
    two = threading.Thread(target=run, args=(engines[1], second))
    two.start()
    watch = make_engine(url)
    with watch.connect() as conn:
        deadline = time.monotonic() + 20
        while two.is_alive() and time.monotonic() < deadline:
            if conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'")).scalar():
                break
            conn.rollback()
            time.sleep(0.05)
    go_on.set()
    one.join(60)
    two.join(60)
    for engine in (*engines, watch):
        engine.dispose()
    return errors


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str):  # type: ignore[no-untyped-def]
    upgrade_to_head(postgres_url)
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    settings.data_dir.mkdir(parents=True)
    return settings


def in_one_unit(work: Callable[[UnitOfWork], object]) -> Work:
    def run(make_session: sessionmaker[Session]) -> None:
        with unit_of_work(make_session) as uow:
            work(uow)
    return run


def _event(uow: UnitOfWork) -> Event:
    event = Event(organisation_id=organisation_for_tests(uow).id, name="Lock order",
                  slug=f"lock-{time.time_ns()}", match_threshold=0.5)
    uow.session.add(event)
    uow.session.flush()
    return event


def test_claiming_an_email_while_the_runner_erases_their_data_does_not_deadlock(settings) -> None:
    url = settings.resolved_database_url
    make_session = make_sessionmaker(make_engine(url))
    with unit_of_work(make_session) as uow:
        event = _event(uow)
        runner = Runner(event_id=event.id, name="Ana", email="ana@example.org", consent_at=utcnow())
        uow.session.add(runner)
        uow.session.flush()
        delivery = Delivery(event_id=event.id, runner_id=runner.id, photo_ids=["p1"])
        uow.session.add(delivery)
        uow.session.flush()
        runner_id, delivery_id = runner.id, delivery.id
    store = LocalPhotoStore(settings.photos_dir)

    errors = interleave(
        url,
        in_one_unit(lambda uow: notify._claim(uow, delivery_id, task_id="task-1", message_id="<m1@example.org>")),
        in_one_unit(lambda uow: runners.delete_runner(uow, store, runner_id)),
        re.compile(r"^\s*UPDATE\b|\bFOR (NO KEY )?UPDATE\b", re.IGNORECASE))  # the claim's first row lock
    assert not errors, errors
    with make_session() as session:
        assert session.scalar(select(Runner.id).where(Runner.id == runner_id)) is None
        assert session.scalar(select(Delivery.id).where(Delivery.id == delivery_id)) is None


def test_reprocessing_a_matched_photo_while_its_runner_is_erased_does_not_deadlock(settings) -> None:
    url = settings.resolved_database_url
    make_session = make_sessionmaker(make_engine(url))
    sender = InlineSender(make_session)  # MATCH_RUNNER at once, as a worker would
    store = LocalPhotoStore(settings.photos_dir)
    with unit_of_work(make_session) as uow:
        event = _event(uow)
        data = png([1, 2])
        store.put_bytes(f"events/{event.id}/originals/0.png", data)
        photo = Photo(event_id=event.id, filename="0.png", sha256="a" * 64, size_bytes=len(data),
                      content_type="image/png", storage_key=f"events/{event.id}/originals/0.png")
        uow.session.add(photo)
        uow.session.flush()
        event_id, photo_id = event.id, photo.id
    ctx = ProcessingContext(settings, make_session, store, FakeBackend(), sender)
    assert process_photos(ctx, [photo_id], task_id="first")[photo_id] == "done"
    face = runners.analyse_selfie(png([1], 300), FakeBackend(), settings)
    with unit_of_work(make_session, sender) as uow:
        runner = runners.enrol(uow, event_id, RunnerCreate(name="Ana", email="ana@example.org", consent=True),
                               face, FakeBackend().model_id, privacy.Consent.on_page(None)).runner
        runner_id = runner.id
    with unit_of_work(make_session) as uow:
        assert uow.session.scalar(select(Match.photo_id).where(Match.runner_id == runner_id)) == photo_id
        uow.session.execute(update(Photo).where(Photo.id == photo_id).values(status="pending"))  # retried

    errors = interleave(
        url,
        lambda make: process_photos(ProcessingContext(settings, make, store, FakeBackend(), InlineSender(make)),
                                    [photo_id], task_id="again"),
        in_one_unit(lambda uow: runners.delete_runner(uow, store, runner_id)),
        # the reprocessing's first lock on what the event guards: its old faces (and, through the
        # cascade, their matches), or the event itself
        re.compile(r"^\s*DELETE FROM faces\b|\bFOR SHARE\b", re.IGNORECASE))
    assert not errors, errors
    with make_session() as session:
        assert session.get(Photo, photo_id).status == "done"
        assert session.scalar(select(Runner.id).where(Runner.id == runner_id)) is None
