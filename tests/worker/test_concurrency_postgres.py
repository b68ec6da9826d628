"""Issue 12.15: the matching claims, tested for real on PostgreSQL with several processes.

Photo processing (the worker's own `process_photos`, with the fake CNN), enrolment followed by
MATCH_RUNNER, threshold changes, erasure and "not me" run at the same time in separate processes,
each with its own connection pool. Whatever the interleaving, the stored matches must be exactly
what a fresh recompute of the whole event gives, nobody erased or rejected may be matched, and
nothing may fail. Then five concurrent DELETEs of one runner: one 204, four 404.
"""

from __future__ import annotations

import io
import multiprocessing
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.db import Event, Face, Match, MatchRejection, Photo, Runner
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.jobs import MATCH_RUNNER
from app.main import create_app
from app.schemas.runner import RunnerCreate
from app.services import gallery, matching, privacy, runners
from app.services.processing import ProcessingContext, process_photos
from app.storage import LocalPhotoStore
from models.fake import FakeBackend, paint_face
from tests.conftest import make_settings, new_api_key, organisation_for_tests

pytestmark = pytest.mark.postgres

IDENTITIES = list(range(1, 9))  # enrolled runners 1..8; faces 200+ are strangers
ERASED, REJECTING = (7, 8), (5,)
N_PHOTOS = 10


def png(identities: list[int], size: int = 400) -> bytes:
    image = Image.new("RGB", (size, size), (30, 120, 30))
    for n, identity in enumerate(identities):
        x = 20 + n * 120
        paint_face(image, (x, 100, x + 80, 180), identity)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the fake CNN reads identities from exact colours
    return buffer.getvalue()


def photo_identities(n: int) -> list[int]:
    return [IDENTITIES[n % 8], IDENTITIES[(n + 3) % 8], 200 + n]


class InlineSender:
    """MATCH_RUNNER runs at once in its own unit of work, as the worker task would; retried on
    deadlock or serialization failure, as Celery's autoretry does."""

    def __init__(self, make_session) -> None:
        self.make_session = make_session

    def send(self, task_name: str, *args: object) -> None:
        if task_name == MATCH_RUNNER:
            retried(lambda: _match(self.make_session, *args))


def _match(make_session, runner_id: str) -> None:
    with unit_of_work(make_session) as uow:
        matching.match_runner(uow, runner_id)


def retried(work, attempts: int = 6):
    for attempt in range(attempts):
        try:
            return work()
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _context(settings: Settings):
    engine = make_engine(settings.resolved_database_url)
    make_session = make_sessionmaker(engine)
    return engine, make_session, InlineSender(make_session)


# --- what each process does (module level: spawned processes import it) -----------------------

def role(name: str, settings: Settings, event_id: str, photo_ids: list[str], barrier, errors) -> None:
    engine, make_session, sender = _context(settings)
    try:
        barrier.wait(timeout=120)
        if name.startswith("photos"):
            ctx = ProcessingContext(settings, make_session, LocalPhotoStore(settings.photos_dir), FakeBackend(), sender)
            for photo_id in photo_ids:
                outcome = retried(lambda: process_photos(ctx, [photo_id], task_id=f"{name}-{photo_id}"))
                assert outcome[photo_id] == "done", outcome
        elif name == "enrol":
            for identity in IDENTITIES:
                form = RunnerCreate(name=f"Runner {identity}", email=f"r{identity}@example.org", consent=True)

                face = runners.analyse_selfie(png([identity], 300), FakeBackend(), settings)

                def enrol_one() -> None:
                    with unit_of_work(make_session, sender) as uow:
                        runners.enrol(uow, event_id, form, face, FakeBackend().model_id, privacy.Consent.on_page(None))
                retried(enrol_one)
        elif name == "threshold":
            for threshold in (0.6, 0.4, 0.7, 0.5) * 2:
                def change() -> None:
                    with unit_of_work(make_session, sender) as uow:
                        matching.update_event(uow, event_id, match_threshold=threshold)
                retried(change)
        elif name == "erase-and-reject":
            _erase_and_reject(make_session, sender, settings, event_id)
    except BaseException as exc:  # reported to the test, which fails with it
        errors.put(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def _runner_with_matches(make_session, email: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        with unit_of_work(make_session) as uow:
            runner = uow.session.scalar(select(Runner).where(Runner.email == email))
            if runner and uow.session.scalar(select(Match.id).where(Match.runner_id == runner.id).limit(1)):
                return runner.id
        time.sleep(0.05)
    raise AssertionError(f"{email} never got a match")


def _erase_and_reject(make_session, sender, settings, event_id: str) -> None:
    deadline = time.monotonic() + 240
    store = LocalPhotoStore(settings.photos_dir)
    for identity in ERASED:
        runner_id = _runner_with_matches(make_session, f"r{identity}@example.org", deadline)

        def erase() -> None:
            with unit_of_work(make_session, sender) as uow:
                runners.delete_runner(uow, store, runner_id)
        retried(erase)
    for identity in REJECTING:
        runner_id = _runner_with_matches(make_session, f"r{identity}@example.org", deadline)

        def reject() -> None:
            with unit_of_work(make_session, sender) as uow:
                runner = uow.session.get(Runner, runner_id)
                photo_id = uow.session.scalar(select(Match.photo_id).where(Match.runner_id == runner_id).limit(1))
                gallery.reject_photo(uow, runner, photo_id)
        retried(reject)


# --- the tests ----------------------------------------------------------------------------------

@pytest.fixture
def pg_settings(tmp_path, postgres_url):
    upgrade_to_head(postgres_url)
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    settings.data_dir.mkdir(parents=True)
    return settings


def _new_event(settings: Settings, threshold: float = 0.5) -> tuple[str, list[str]]:
    engine, make_session, _ = _context(settings)
    store = LocalPhotoStore(settings.photos_dir)
    with unit_of_work(make_session) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name="Concurrent run",
                      slug=f"concurrent-{time.time_ns()}", match_threshold=threshold)
        uow.session.add(event)
        uow.session.flush()
        photo_ids = []
        for n in range(N_PHOTOS):
            key = f"events/{event.id}/originals/{n}.png"
            data = png(photo_identities(n))
            store.put_bytes(key, data)
            photo = Photo(event_id=event.id, filename=f"{n}.png", sha256=f"{event.id}{n:04d}".ljust(64, "0"),
                          size_bytes=len(data), content_type="image/png", storage_key=key)
            uow.session.add(photo)
            uow.session.flush()
            photo_ids.append(photo.id)
        event_id = event.id
    engine.dispose()
    return event_id, photo_ids


def _snapshot(make_session, event_id: str) -> set[tuple[str, str, str]]:
    with unit_of_work(make_session) as uow:
        return {(m.runner_id, m.photo_id, m.face_id)
                for m in uow.session.scalars(select(Match).where(Match.event_id == event_id))}


def test_processing_enrolment_threshold_erasure_and_not_me_interleaved_in_processes(pg_settings):
    event_id, photo_ids = _new_event(pg_settings)
    spawn = multiprocessing.get_context("spawn")
    roles = {"photos-1": photo_ids[0::2], "photos-2": photo_ids[1::2], "enrol": [], "threshold": [],
             "erase-and-reject": []}
    barrier, errors = spawn.Barrier(len(roles)), spawn.Queue()
    processes = [spawn.Process(target=role, args=(name, pg_settings, event_id, ids, barrier, errors))
                 for name, ids in roles.items()]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not alive and not problems, (alive, problems)

    engine, make_session, _ = _context(pg_settings)
    with unit_of_work(make_session) as uow:
        assert all(p.status == "done" for p in uow.session.scalars(select(Photo).where(Photo.event_id == event_id)))
        remaining = {r.email: r for r in uow.session.scalars(select(Runner).where(Runner.event_id == event_id))}
        assert set(remaining) == {f"r{i}@example.org" for i in IDENTITIES if i not in ERASED}
        assert all(r.matched_at is not None for r in remaining.values())
        rejected = set(uow.session.execute(select(MatchRejection.runner_id, MatchRejection.photo_id)).all())
        excluded = dict(uow.session.execute(select(Face.id, Face.photo_id).where(
            Face.event_id == event_id, Face.excluded_at.is_not(None))).all())
    stored = _snapshot(make_session, event_id)
    # the order things happened in changed nothing: a fresh recompute writes no difference
    with unit_of_work(make_session) as uow:
        matching.rematch_event(uow, matching.lock_event(uow, event_id))
    assert _snapshot(make_session, event_id) == stored
    assert len(rejected) == len(REJECTING) and not {(r, p) for r, p, _ in stored} & rejected
    # erasure marks their faces in the photos they matched by then (each had one at least); a photo
    # of theirs processed later keeps an unmarked face that nobody left is close to
    erased_photos = {photo_ids[n] for n in range(N_PHOTOS) if set(photo_identities(n)) & set(ERASED)}
    assert len(ERASED) <= len(excluded) and set(excluded.values()) <= erased_photos
    assert not {f for _, _, f in stored} & set(excluded)
    # every enrolled runner that is left is in each photo that shows them (threshold back at 0.5)
    expected = {(remaining[f"r{i}@example.org"].id, photo_ids[n])
                for n in range(N_PHOTOS) for i in photo_identities(n) if f"r{i}@example.org" in remaining}
    assert {(r, p) for r, p, _ in stored} == expected - rejected
    engine.dispose()


def test_five_concurrent_deletes_of_one_runner_answer_one_204(pg_settings):
    event_id, _ = _new_event(pg_settings)
    engine, make_session, _ = _context(pg_settings)
    with unit_of_work(make_session) as uow:
        runner = Runner(event_id=event_id, name="Once", email="once@example.org",
                        embedding=FakeBackend().embed([np.full((4, 4, 3), 9, np.uint8)])[0].tobytes(),
                        model_id="fake-1")
        uow.session.add(runner)
        uow.session.flush()
        runner_id = runner.id
    engine.dispose()
    app = create_app(pg_settings)
    key = new_api_key(pg_settings)
    barrier, statuses = threading.Barrier(5), []

    def delete() -> None:
        client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
        barrier.wait(timeout=30)
        statuses.append(client.delete(f"/api/v1/runners/{runner_id}").status_code)

    threads = [threading.Thread(target=delete) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [204, 404, 404, 404, 404], statuses
