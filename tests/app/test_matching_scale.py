"""Matching built to scale: the per-worker runner cache, PostgreSQL's shared lock and COPY stream,
and the background rematch. Real networks and real photos, as in test_matching.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import numpy as np

from app.db.session import unit_of_work
from app.main import create_app
from app.services import face_matrix, matching
from tests.app.test_matching import ENROLLED, EVENT_PHOTOS, EXPECTED, InlineSender, World, world  # noqa: F401
from tests.conftest import migrated_settings, new_api_key


@pytest.fixture
def pg_world(tmp_path, faces_dir, postgres_url):
    settings = migrated_settings(tmp_path / "data", database_url=postgres_url)
    app = create_app(settings)
    app.state.sender = InlineSender(app.state.make_session)
    with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
        yield World(client, faces_dir)


@pytest.mark.postgres
def test_matching_on_postgres_streams_faces_and_finds_the_same_runners(pg_world, monkeypatch):
    monkeypatch.setattr(face_matrix, "CHUNK_FACES", 3)  # several COPY chunks, cut mid-stream
    world = pg_world
    event = world.event()
    first = dict(list(EVENT_PHOTOS.items())[:2])
    rest = dict(list(EVENT_PHOTOS.items())[2:])
    photo_ids = world.upload(event["id"], first)
    world.process(list(photo_ids.values()))  # before the runners: found by match_runner's search
    runners = {person: world.enrol(event["id"], person) for person in ENROLLED}
    later = world.upload(event["id"], rest)
    world.process(list(later.values()))  # after: found by on_photo_done under the shared lock
    photo_ids.update(later)
    assert world.found(runners, photo_ids) == EXPECTED


@pytest.mark.postgres
def test_copy_stream_gives_the_rows_a_plain_select_gives(pg_world, monkeypatch):
    world = pg_world
    event = world.event()
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    model_id = "yunet-2023mar+sface-2021dec"
    with unit_of_work(world.app.state.make_session) as uow:
        monkeypatch.setattr(face_matrix, "CHUNK_FACES", 4)
        copied = list(face_matrix.event_face_chunks(uow, event["id"], model_id, 128))
        monkeypatch.setattr(uow.session.get_bind().dialect, "name", "sqlite")  # the plain-rows path
        plain = list(face_matrix.event_face_chunks(uow, event["id"], model_id, 128))
    assert len(copied) > 1
    as_dict = lambda chunks: sorted((p, v.tobytes()) for ids, m in chunks for p, v in zip(ids, m))  # noqa: E731
    assert as_dict(copied) == as_dict(plain) and len(as_dict(plain)) >= 10


def test_runner_matrix_is_cached_per_version_and_reloaded_after_enrolment_or_deletion(world):
    matching.runner_cache.clear()
    loads = lambda: matching.runner_cache.loads  # noqa: E731
    event = world.event()
    photos = list(EVENT_PHOTOS.items())
    ids = world.upload(event["id"], dict(photos[:1]))
    runner = world.enrol(event["id"], ENROLLED[0])
    world.process(list(ids.values()))
    start = loads()
    more = world.upload(event["id"], dict(photos[1:3]))
    world.process(list(more.values()))
    assert loads() == start  # same runner set: no reload for the next photos
    second = world.enrol(event["id"], ENROLLED[1])
    late = world.upload(event["id"], dict(photos[3:]))
    world.process(list(late.values()))
    assert loads() == start + 1  # the enrolment bumped the version once
    ids.update(more)
    ids.update(late)
    runners = {ENROLLED[0]: runner, ENROLLED[1]: second}
    expected = {p: EXPECTED[p] for p in runners}
    assert world.found(runners, ids) == expected
    assert world.client.delete(f"/api/v1/runners/{second['id']}").status_code == 204
    with unit_of_work(world.app.state.make_session) as uow:
        state = matching.read_event_state(uow, event["id"])
        after = matching.runner_cache.get(uow, event["id"], "yunet-2023mar+sface-2021dec", state.runners_version)
    assert list(after.ids) == [runner["id"]] and loads() == start + 2


def test_background_rematch_resumes_from_its_cursor_and_reports_progress(world):
    event = world.event()
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    runners = {person: world.enrol(event["id"], person) for person in ENROLLED}
    make_session = world.app.state.make_session
    with unit_of_work(make_session) as uow:  # what PATCH does, without running the task
        event_row = matching.lock_event(uow, event["id"])
        event_row.match_threshold = 0.95
        matching.start_rematch(uow, event_row, queue=False)
    with unit_of_work(make_session) as uow:
        assert matching.rematch_event_chunk(uow, event["id"], chunk=2) is True  # a crash after this chunk
    stats = world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]
    assert (stats["rematch_done"], stats["rematch_total"]) == (2, len(photo_ids))
    with unit_of_work(make_session, world.sender) as uow:
        assert matching.sweep_unfinished_rematches(uow) == [event["id"]]  # runs the rest inline
    stats = world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]
    assert stats["rematch_done"] == stats["rematch_total"] and stats["matches"] == 0
    world.client.patch(f"/api/v1/events/{event['id']}", json={"match_threshold": event["match_threshold"]})
    assert world.found(runners, photo_ids) == EXPECTED
    with unit_of_work(make_session, world.sender) as uow:
        assert matching.sweep_unfinished_rematches(uow) == []


def test_face_matrix_cache_follows_new_reprocessed_and_deleted_photos(world):
    from app.db import Photo
    from app.services.face_matrix import FaceMatrixCache, event_face_chunks

    cache = FaceMatrixCache()
    event = world.event()
    photos = list(EVENT_PHOTOS.items())
    ids = world.upload(event["id"], dict(photos[:2]))
    world.process(list(ids.values()))
    model_id = "yunet-2023mar+sface-2021dec"
    make_session = world.app.state.make_session

    def both(threshold: float = 0.3) -> tuple[set[str], set[str]]:
        with unit_of_work(make_session) as uow:
            chunks = list(event_face_chunks(uow, event["id"], model_id, 128))
            probe = chunks[0][1][0]  # the first stored face: its own photo is always a hit
            exact = {p for ids_, m in chunks for p, s in zip(ids_, m @ probe) if s >= threshold}
            return set(cache.candidates(uow, event["id"], model_id, probe, threshold)), exact

    cached, exact = both()
    assert exact <= cached and cached
    more = world.upload(event["id"], dict(photos[2:]))
    world.process(list(more.values()))  # synced: only these are read
    with unit_of_work(make_session) as uow:
        every = set(cache.candidates(uow, event["id"], model_id, np.zeros(128, np.float32), -1.0))
    assert every == set(ids.values()) | set(more.values())
    again = list(more.values())[0]
    with unit_of_work(make_session) as uow:
        uow.session.get(Photo, again).status = "pending"
    world.process([again])  # reprocessed: its old rows die, the new ones count
    gone = list(ids.values())[0]
    with unit_of_work(make_session) as uow:
        uow.session.delete(uow.session.get(Photo, gone))
    with unit_of_work(make_session) as uow:  # more rows than stored faces: rebuilt without it
        every = set(cache.candidates(uow, event["id"], model_id, np.zeros(128, np.float32), -1.0))
    assert every == (set(ids.values()) | set(more.values())) - {gone}


def test_face_matrix_never_offers_excluded_or_purged_faces(world):
    """Erasure marks faces excluded and retention purges templates: the in-memory matrix follows
    at its next search (privacy.matchable_faces), it never waits for the periodic rebuild."""
    from sqlalchemy import update

    from app.db import Event, Face, utcnow
    from app.services.face_matrix import FaceMatrixCache

    cache = FaceMatrixCache()
    event = world.event()
    ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(ids.values()))
    model_id = "yunet-2023mar+sface-2021dec"
    make_session = world.app.state.make_session
    everything = np.zeros(128, np.float32)

    def search() -> set[str]:
        with unit_of_work(make_session) as uow:
            return set(cache.candidates(uow, event["id"], model_id, everything, -1.0))

    assert search() == set(ids.values())
    erased = list(ids.values())[0]
    with unit_of_work(make_session) as uow:  # what privacy.exclude_faces_of writes
        uow.session.execute(update(Face).where(Face.photo_id == erased).values(excluded_at=utcnow(), embedding=None))
    assert search() == set(ids.values()) - {erased}
    with unit_of_work(make_session) as uow:  # what privacy.purge_event writes first
        uow.session.execute(update(Event).where(Event.id == event["id"]).values(biometrics_purged_at=utcnow()))
    assert search() == set() and not cache._events
