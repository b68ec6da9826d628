"""Matching built to scale: the per-worker runner cache, PostgreSQL's shared lock and COPY stream,
and the background rematch. Real networks and real photos, as in test_matching.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sa_event

import numpy as np

from app.db.session import unit_of_work
from app.main import create_app
from app.services import face_matrix, matching
from tests.app.test_matching import ENROLLED, EVENT_PHOTOS, EXPECTED, InlineSender, World, world  # noqa: F401
from tests.conftest import RecordingSender, migrated_settings, new_api_key


@contextmanager
def sql_run(world: World) -> Iterator[list[tuple[str, object]]]:
    """The (statement, parameters) that the world's database runs inside the block."""
    engine = world.app.state.make_session.kw["bind"]
    executed: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, *_args) -> None:  # type: ignore[no-untyped-def]
        executed.append((statement, parameters))

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        yield executed
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)


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


def test_runner_matrix_is_cached_per_version_and_read_again_after_enrolment_or_deletion(world):
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
    assert loads() == start and matching.runner_cache.partial_loads  # the enrolment: its row alone
    ids.update(more)
    ids.update(late)
    runners = {ENROLLED[0]: runner, ENROLLED[1]: second}
    expected = {p: EXPECTED[p] for p in runners}
    assert world.found(runners, ids) == expected
    assert world.client.delete(f"/api/v1/runners/{second['id']}").status_code == 204
    with unit_of_work(world.app.state.make_session) as uow:
        state = matching.read_event_state(uow, event["id"])
        after = matching.runner_cache.get(uow, event["id"], "yunet-2023mar+sface-2021dec", state.runners_version)
    assert list(after.ids) == [runner["id"]] and loads() == start + 1  # a deletion: read in full


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


def test_face_matrix_cache_follows_new_reprocessed_and_deleted_photos(world, monkeypatch):
    from datetime import timedelta

    from app.db import Photo
    from app.services.face_matrix import FaceMatrixCache, event_face_chunks

    monkeypatch.setattr(face_matrix, "COUNT_EVERY", timedelta(0))  # a deletion is seen at the next search

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


def test_face_matrix_sync_reads_the_faces_of_new_photos_only(world):
    """Every search syncs the matrix with the photos processed in the last minutes (the slack
    covers transactions committed late): it reads their faces only when it does not hold that
    version of the photo. It used to read every face of those minutes, and to count the event's
    faces (to see deletions), at every search; the count now runs every COUNT_EVERY."""
    from app.services.face_matrix import FaceMatrixCache

    cache = FaceMatrixCache()
    event = SyntheticEvent(world)
    photos = [event.photo([vector(i), vector(50 + i)]) for i in range(3)]

    def search() -> tuple[set[str], list[str]]:
        """The photos found, and what the search read: "count" for a count of the event's faces,
        the parameters (photo ids) of each read of face embeddings."""
        with sql_run(world) as executed, unit_of_work(event.make_session) as uow:
            found = set(cache.candidates(uow, event.id, MODEL, vector(0), 0.9))
        reads = []
        for statement, parameters in executed:
            if "sum(photos.face_count)" in statement:
                reads.append("count")
            if "faces.embedding" in statement:
                reads.append(" ".join(str(p) for p in (parameters.values() if isinstance(parameters, dict)
                                                       else parameters)))
        return found, reads

    assert search()[0] == {photos[0]}  # built
    assert search()[0] == {photos[0]}  # the photos of the last minutes before the build, read once again
    assert search() == ({photos[0]}, [])  # every photo is held as processed
    newer = event.photo([vector(0)])
    found, reads = search()
    assert found == {photos[0], newer}
    assert len(reads) == 1 and newer in reads[0]  # its faces only
    assert not any(p in reads[0] for p in photos)


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


# --- the incremental runner cache: real services and databases, synthetic vectors ----------------

MODEL = "yunet-2023mar+sface-2021dec"
BOTH_DATABASES = ["world", pytest.param("pg_world", marks=pytest.mark.postgres)]


def vector(seed: int) -> np.ndarray:
    """A random unit vector: about 0.0 similar to any other, so only its own copy matches it."""
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


class SyntheticEvent:
    """An event whose runners are enrolled and erased through the services and whose photos are
    matched by `on_photo_done`, as in the worker, with chosen vectors instead of the networks."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.make_session = world.app.state.make_session
        self.id = world.event()["id"]

    def enrol(self, email: str, vec: np.ndarray, bib: str | None = None) -> str:
        from app.schemas.runner import RunnerCreate
        from app.services import privacy, runners
        from models.pipeline import FaceResult

        face = FaceResult((0.0, 0.0, 100.0, 100.0), ((0.0, 0.0),) * 5, 0.9, 100.0, vec)
        form = RunnerCreate(name=email.split("@")[0], email=email, consent=True, bib=bib)
        with unit_of_work(self.make_session, RecordingSender()) as uow:
            return runners.enrol(uow, self.id, form, face, MODEL, privacy.Consent.on_page(None)).runner.id

    def delete(self, runner_id: str) -> None:
        from app.services import runners

        with unit_of_work(self.make_session, RecordingSender()) as uow:
            runners.delete_runner(uow, self.world.app.state.store, runner_id)

    def delete_photo(self, photo_id: str) -> None:
        from app.db import Photo
        from app.services import photos

        with unit_of_work(self.make_session, RecordingSender()) as uow:
            photos.delete_photo(uow, self.world.app.state.store, uow.session.get(Photo, photo_id))

    def start_list(self, csv: str) -> None:
        from app.services import start_list

        with unit_of_work(self.make_session, RecordingSender()) as uow:
            start_list.import_start_list(uow, self.id, csv.encode())

    def photo(self, faces: list[np.ndarray], *, sizes: list[float] | None = None,
              bibs: dict[int, str] | None = None) -> str:
        """A processed photo with these face vectors (`bibs`: face index -> number read on it)."""
        import secrets

        from app.db import BibRead, Face, Photo, utcnow

        with unit_of_work(self.make_session, RecordingSender()) as uow:
            photo = Photo(event_id=self.id, filename="synthetic.jpg", sha256=secrets.token_hex(32), size_bytes=1,
                          content_type="image/jpeg", storage_key="synthetic", status="done", processed_at=utcnow(),
                          face_count=len(faces))
            uow.session.add(photo)
            uow.session.flush()
            rows = [Face(photo_id=photo.id, event_id=self.id, model_id=MODEL, x1=0, y1=0, x2=size, y2=size,
                         score=0.9, size_px=size, landmarks=[], embedding=vec.astype(np.float32).tobytes())
                    for vec, size in zip(faces, sizes or [100.0] * len(faces))]
            uow.session.add_all(rows)
            uow.session.flush()
            uow.session.add_all([BibRead(photo_id=photo.id, event_id=self.id, model_id="bibs", number=number,
                                         face_id=rows[i].id, x1=0, y1=0, x2=10, y2=10, score=0.9, text_px=20)
                                 for i, number in (bibs or {}).items()])
            uow.session.flush()
            matching.on_photo_done(uow, photo, first_faces=True)  # as processing calls it
            return photo.id

    def matched(self, photo_id: str) -> set[str]:
        from sqlalchemy import select

        from app.db import Match

        with unit_of_work(self.make_session) as uow:
            return set(uow.session.scalars(select(Match.runner_id).where(Match.photo_id == photo_id)))

    def served(self, cache: matching.RunnerCache) -> list[tuple[str, bytes]]:
        """What `cache` gives a photo of this event now: (runner id, vector) in column order."""
        with unit_of_work(self.make_session) as uow:
            runners = cache.get(uow, self.id, MODEL, matching.read_event_state(uow, self.id).runners_version)
        return [(runner_id, runners.columns[:, i].tobytes()) for i, runner_id in enumerate(runners.ids)]

    def stored(self) -> list[tuple[str, bytes]]:
        """The same, read from the database in full (as every version change did before)."""
        with unit_of_work(self.make_session) as uow:
            runners = matching.load_runners(uow, self.id, MODEL)
        return [(runner_id, runners.columns[:, i].tobytes()) for i, runner_id in enumerate(runners.ids)]

    def changed_version(self, runner_id: str) -> tuple[int, int]:
        """(the runner's changed_version, the event's runners_version)."""
        from app.db import Runner

        with unit_of_work(self.make_session) as uow:
            return (uow.session.get(Runner, runner_id).changed_version,
                    matching.read_event_state(uow, self.id).runners_version)


def loads(cache: matching.RunnerCache) -> tuple[int, int]:
    return cache.loads, cache.partial_loads


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_runner_cache_reads_only_changed_rows_and_never_serves_a_stale_or_deleted_runner(db, request):
    """Two workers: this process's cache matches the photos, `other` is a second worker's cache that
    looks only now and then, so it catches up over enrolments, re-enrolments and deletions at once."""
    event = SyntheticEvent(request.getfixturevalue(db))
    matching.runner_cache.clear()
    other = matching.RunnerCache()
    r0, r1 = event.enrol("r0@example.com", vector(0)), event.enrol("r1@example.com", vector(1))
    assert event.matched(event.photo([vector(0), vector(1), vector(99)])) == {r0, r1}
    assert event.served(other) == event.stored() and loads(other) == (1, 0)
    start = loads(matching.runner_cache)

    r2 = event.enrol("r2@example.com", vector(2))
    assert event.matched(event.photo([vector(2)])) == {r2}
    assert event.enrol("r1@example.com", vector(11)) == r1  # re-enrolment: same runner, new template
    assert event.changed_version(r1)[0] == event.changed_version(r1)[1]  # stamped with the new version
    assert event.matched(event.photo([vector(1)])) == set()  # the old template is never served again
    assert event.matched(event.photo([vector(11)])) == {r1}
    assert loads(matching.runner_cache) == (start[0], start[1] + 2)  # only the changed rows were read
    event.delete(r2)
    assert event.matched(event.photo([vector(2), vector(11)])) == {r1}  # the erased runner is gone
    assert loads(matching.runner_cache)[0] == start[0] + 1  # a deletion: the count differs, read in full

    # the other worker saw none of it: r2 came and went (never held, so nothing to drop), r1 changed
    assert event.served(other) == event.stored() and loads(other) == (1, 1)
    r3 = event.enrol("r3@example.com", vector(3))
    event.delete(r0)  # held by the other worker: read in full
    r4 = event.enrol("r4@example.com", vector(4))
    assert event.served(other) == event.stored() and loads(other) == (2, 1)
    assert {runner_id for runner_id, _ in event.stored()} == {r1, r3, r4}
    assert event.matched(event.photo([vector(0), vector(3), vector(4), vector(11)])) == {r1, r3, r4}
    assert event.served(matching.runner_cache) == event.stored()


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_runner_cache_follows_a_bib_link_that_a_photo_moves(db, request):
    """A start-list runner (no selfie) is matched by the largest face their bib was read on: a
    photo with a larger one moves that row of the runner matrix, and the cache follows."""
    event = SyntheticEvent(request.getfixturevalue(db))
    matching.runner_cache.clear()
    other = matching.RunnerCache()
    event.start_list("bib,name\n42,Kim\n")
    selfie = event.enrol("selfie@example.com", vector(0))
    assert event.served(other) == event.stored() and len(event.stored()) == 1  # no link yet
    first = event.photo([vector(1)], sizes=[50.0], bibs={0: "42"})
    kim = (set(event.matched(first)) - {selfie}).pop()
    assert event.served(other) == event.stored() == [(selfie, vector(0).tobytes()), (kim, vector(1).tobytes())]
    event.photo([vector(2)], sizes=[80.0], bibs={0: "42"})  # larger: Kim's link moves to this face
    assert event.served(other) == event.stored() == [(selfie, vector(0).tobytes()), (kim, vector(2).tobytes())]
    assert loads(other) == (1, 2)
    assert event.matched(event.photo([vector(2)])) == {kim}  # found by the linked face, no bib read
    assert event.matched(event.photo([vector(1)])) == set()  # the old link is never served again
    # Kim sends a selfie (the start-list row is completed): a row older than `selfie` joins the selfies
    assert event.enrol("kim@example.com", vector(3), bib="42") == kim < selfie
    assert event.served(other) == event.stored() == [(kim, vector(3).tobytes()), (selfie, vector(0).tobytes())]
    assert loads(other) == (1, 3)


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_photos_that_move_bib_links_read_only_those_links_never_all_of_them(db, request, monkeypatch):
    """Race day after a start-list import: most photos carry a start-list bib and many move a link.
    Each photo reads again only the links of the runners on it (and a cache catching up, only the
    stamped ones): reading every link meant a scan of the event's bib reads and faces per photo."""
    from app.services import bib_matching

    event = SyntheticEvent(request.getfixturevalue(db))
    matching.runner_cache.clear()
    other = matching.RunnerCache()
    event.start_list("bib,name\n" + "".join(f"{40 + n},Runner {n}\n" for n in range(4)))
    selfie = event.enrol("selfie@example.com", vector(0))
    event.photo([vector(1), vector(2)], sizes=[50.0, 50.0], bibs={0: "40", 1: "41"})
    assert event.served(other) == event.stored()
    whole_reads = []
    linked_faces = bib_matching.linked_faces

    def counted(uow, event_id, model_id, runner_ids=None, **kwargs):  # type: ignore[no-untyped-def]
        if runner_ids is None:
            whole_reads.append(event_id)
        return linked_faces(uow, event_id, model_id, runner_ids, **kwargs)

    monkeypatch.setattr(bib_matching, "linked_faces", counted)
    listed = [r for r, _ in event.stored() if r != selfie]
    moved = event.photo([vector(3), vector(4)], sizes=[80.0, 20.0], bibs={0: "40", 1: "42"})  # 40 moves, 42 new
    assert len(event.matched(moved)) == 2 and listed[0] in event.matched(moved)
    assert event.served(other) == event.stored()  # the other worker catches up from the stamps
    assert event.matched(event.photo([vector(3), vector(0)])) == {listed[0], selfie}  # by the moved link
    assert event.matched(event.photo([vector(1)])) == set()  # the old link is never served again
    assert event.served(matching.runner_cache) == event.stored()
    whole_reads.clear()  # the two `stored()` above read every link on purpose
    event.photo([vector(5)], sizes=[90.0], bibs={0: "41"})
    assert event.served(other) == event.stored()
    assert whole_reads == [event.id]  # `stored()` only: neither the photo nor either cache read them all
    assert loads(other)[0] == 1  # and no cache read everything else again either


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_a_deleted_start_list_runner_is_never_served_again(db, request):
    """A selfie-less runner's deletion (erasure) is seen by the count of such runners: the cache
    reads everything again rather than keep their linked face."""
    event = SyntheticEvent(request.getfixturevalue(db))
    matching.runner_cache.clear()
    other = matching.RunnerCache()
    event.start_list("bib,name\n50,Ann\n51,Bo\n")
    event.photo([vector(1), vector(2)], sizes=[50.0, 50.0], bibs={0: "50", 1: "51"})
    by_face = {v: r for r, v in event.stored()}
    ann, bo = by_face[vector(1).tobytes()], by_face[vector(2).tobytes()]
    assert event.served(other) == event.stored() and len(event.stored()) == 2
    event.delete(ann)
    assert event.served(other) == event.stored() == [(bo, vector(2).tobytes())]
    assert event.matched(event.photo([vector(1)])) == set()  # Ann's face matches nobody now


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_deleting_the_photo_of_a_bib_link_moves_the_link_and_rematches_the_runner(db, request):
    """The face a start-list runner is matched by goes with its photo: the link moves to the next
    face their bib was read on, every worker's cache follows, and their photos are matched again."""
    event = SyntheticEvent(request.getfixturevalue(db))
    matching.runner_cache.clear()
    other = matching.RunnerCache()
    event.start_list("bib,name\n42,Kim\n")
    event.photo([vector(1)], sizes=[50.0], bibs={0: "42"})
    linked = event.photo([vector(2)], sizes=[80.0], bibs={0: "42"})  # the larger face: Kim's link
    seen = event.photo([vector(2)])  # no bib read: found by the linked face
    [(kim, _)] = event.stored()
    assert event.matched(seen) == {kim} and event.served(other) == [(kim, vector(2).tobytes())]
    event.delete_photo(linked)
    assert event.served(other) == event.stored() == [(kim, vector(1).tobytes())]
    assert event.matched(seen) == set()  # a face of the deleted photo no longer finds anyone


@pytest.mark.postgres
def test_a_photo_committed_while_another_moves_a_link_is_matched_by_the_moved_link(pg_world, monkeypatch):
    """A photo that moves a start-list runner's link searches the event's faces for the new link
    before it takes the exclusive lock, and completes that search under the lock: a photo
    committed in between (matched by then against the old link) is matched by the new one."""
    from app.services.face_matrix import EventFaces

    event = SyntheticEvent(pg_world)
    event.start_list("bib,name\n42,Kim\n")
    event.photo([vector(1)], sizes=[50.0], bibs={0: "42"})
    [(kim, _)] = event.stored()
    searches = []  # (under the event lock?, first row) of every search over the face matrix
    locked = []
    lock_event, search = matching.lock_event, EventFaces.search
    meanwhile: list[str] = []

    def lock_after_another_photo(uow, event_id):  # type: ignore[no-untyped-def]
        if not meanwhile:  # the first photo's lock only: another worker commits a photo just before
            meanwhile.append(event.photo([vector(2)]))
        locked.append(True)
        return lock_event(uow, event_id)

    def recorded(self, vector, threshold, first_row=0):  # type: ignore[no-untyped-def]
        searches.append((bool(locked), first_row))
        return search(self, vector, threshold, first_row)

    monkeypatch.setattr(matching, "lock_event", lock_after_another_photo)
    monkeypatch.setattr(EventFaces, "search", recorded)
    moving = event.photo([vector(2)], sizes=[80.0], bibs={0: "42"})  # larger: Kim's link moves here
    assert event.stored() == [(kim, vector(2).tobytes())]
    assert event.matched(moving) == {kim}
    assert event.matched(meanwhile[0]) == {kim}  # found under the lock, after the search before it
    assert searches[0] == (False, 0)  # the whole matrix, before the lock
    assert all(first_row > 0 for under_lock, first_row in searches if under_lock)  # only what came after


def reprocess(world: World, make_session, photo_id: str, event_id: str, vec: np.ndarray) -> str:  # type: ignore[no-untyped-def]
    """The worker's last stage (processing._store_results) for a photo claimed again, as a retry
    would: one face of `vec`, and no bib read any more."""
    from types import SimpleNamespace

    from PIL import Image
    from sqlalchemy import update

    from app.db import Photo
    from app.services import processing
    from models.pipeline import FaceResult, PhotoAnalysis

    with unit_of_work(make_session) as uow:
        uow.session.execute(update(Photo).where(Photo.id == photo_id).values(status="processing", claimed_by="again"))
    ctx = processing.ProcessingContext(world.settings, make_session, world.app.state.store,
                                       SimpleNamespace(model_id=MODEL), RecordingSender(),
                                       bib_reader=SimpleNamespace(model_id="bibs"))
    face = FaceResult((0.0, 0.0, 80.0, 80.0), ((0.0, 0.0),) * 5, 0.9, 80.0, vec)
    return processing._store_results(ctx, photo_id, event_id, PhotoAnalysis([face], (100, 100), Image.new("RGB", (100, 100))),
                                     [], "again")


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_reprocessing_the_photo_of_a_bib_link_moves_the_link_when_the_bib_is_no_longer_read(db, request):
    """As deletion: a reprocessed photo's new faces come without the bib read that held a
    start-list runner's link, so the link moves to the next face their bib was read on."""
    world = request.getfixturevalue(db)
    event = SyntheticEvent(world)
    matching.runner_cache.clear()
    other = matching.RunnerCache()
    event.start_list("bib,name\n42,Kim\n")
    event.photo([vector(1)], sizes=[50.0], bibs={0: "42"})
    linked = event.photo([vector(2)], sizes=[80.0], bibs={0: "42"})  # the larger face: Kim's link
    seen = event.photo([vector(2)])
    [(kim, _)] = event.stored()
    assert event.matched(seen) == {kim} and event.served(other) == [(kim, vector(2).tobytes())]
    assert reprocess(world, event.make_session, linked, event.id, vector(2)) == "done"
    assert event.served(other) == event.stored() == [(kim, vector(1).tobytes())]
    assert event.matched(seen) == set()  # found by the old link only


@pytest.mark.postgres
def test_two_photos_reprocessed_at_once_that_both_move_bib_links_do_not_deadlock(pg_world):
    """Review C5's order for the moves: each reprocessing takes the event's exclusive lock first,
    so the second waits; with the shared lock first, both would upgrade it and one would die."""
    import re

    from tests.app.test_lock_order import interleave

    event = SyntheticEvent(pg_world)
    event.start_list("bib,name\n42,Kim\n43,Lee\n")
    first = event.photo([vector(1)], sizes=[80.0], bibs={0: "42"})
    second = event.photo([vector(2)], sizes=[80.0], bibs={0: "43"})
    event.photo([vector(3)], sizes=[50.0], bibs={0: "42"})
    event.photo([vector(4)], sizes=[50.0], bibs={0: "43"})
    before = dict(event.stored())
    errors = interleave(pg_world.settings.resolved_database_url,
                        lambda make: reprocess(pg_world, make, first, event.id, vector(1)),
                        lambda make: reprocess(pg_world, make, second, event.id, vector(2)),
                        re.compile(r"^\s*UPDATE events\b|\bFOR SHARE\b", re.IGNORECASE))
    assert not errors, errors
    moved = dict(event.stored())
    assert {before[r] for r in moved} == {vector(1).tobytes(), vector(2).tobytes()}
    assert set(moved.values()) == {vector(3).tobytes(), vector(4).tobytes()}


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_new_runners_and_background_rematches_take_the_runner_matrix_from_the_cache(db, request, monkeypatch):
    """Neither a new runner's matching nor each chunk of a background rematch reads every runner
    of the event again (counted as the SQL statements that do)."""
    world = request.getfixturevalue(db)
    event = SyntheticEvent(world)
    matching.runner_cache.clear()
    runners = [event.enrol(f"r{i}@example.com", vector(i)) for i in range(3)]
    # the first photo reads the runners; the fourth holds the newcomer's face, before they enrol
    photos = [event.photo([vector(i), vector(100 + i)]) for i in (0, 1, 2, 3, 0)]
    with sql_run(world) as executed:
        newcomer = event.enrol("r3@example.com", vector(3))
        with unit_of_work(event.make_session, RecordingSender()) as uow:
            assert matching.match_runner(uow, newcomer) == 1
        with unit_of_work(event.make_session, RecordingSender()) as uow:
            matching.start_rematch(uow, matching.lock_event(uow, event.id), queue=False)
        for _ in range(3):  # 5 photos, 2 a chunk
            with unit_of_work(event.make_session, RecordingSender()) as uow:
                matching.rematch_event_chunk(uow, event.id, chunk=2)
    full_reads = [statement for statement, _ in executed  # a full read of an event's runners
                  if "FROM runners" in statement and "runners.embedding IS NOT NULL" in statement
                  and "ORDER BY runners.id" in statement and "count(" not in statement]
    assert full_reads == []
    assert [event.matched(p) for p in photos] == [{r} for r in (*runners, newcomer, runners[0])]


def test_runner_rows_are_stamped_with_the_version_that_changed_their_matrix_columns(world):
    from app.db import Runner

    event = SyntheticEvent(world)
    matching.runner_cache.clear()
    full_reads = matching.runner_cache.loads
    first = event.enrol("first@example.com", vector(0))
    assert event.changed_version(first) == (1, 1)
    second = event.enrol("second@example.com", vector(1))
    with unit_of_work(event.make_session, RecordingSender()) as uow:
        matching.match_runner(uow, first)  # writes matched_at only
    assert event.changed_version(first) == (1, 2) and event.changed_version(second) == (2, 2)
    event.start_list("bib,name,email\n7,Second Runner,second@example.com\n")  # gives `second` a bib
    assert event.changed_version(second) == (3, 3)
    event.start_list("bib,name\n7,Second R.\n")  # the same bib again, a new name: not a matrix column
    assert event.changed_version(second) == (3, 4)
    assert event.served(matching.runner_cache) == event.stored()

    # A writer that flushes its change before bumping the version (here by the bump's own
    # autoflush) stamps the old version; the cache reads from its version inclusive, so it is seen.
    with unit_of_work(event.make_session) as uow:
        uow.session.get(Runner, first).embedding = vector(5).tobytes()
        matching.runners_changed(uow, event.id)
    assert event.changed_version(first) == (4, 5)
    assert event.served(matching.runner_cache) == event.stored()
    assert (first, vector(5).tobytes()) in event.stored()
    assert matching.runner_cache.loads == full_reads + 1  # its first read; the others read changed rows


@pytest.mark.parametrize("dim", [128, 1100])  # 1100: partial sums could pass 2**24, the integer product
def test_face_matrix_grows_by_blocks_and_searches_exactly_as_the_integer_product(dim, monkeypatch):
    """The in-memory face matrix grows a block at a time (the blocks it has are never copied) and
    its float32 search finds exactly the rows that the int8 x int32 product puts over the bar."""
    from datetime import timedelta

    from app.db import utcnow
    from app.services.face_matrix import INT8_MARGIN, SCALE, EventFaces, quantised

    monkeypatch.setattr(face_matrix, "BLOCK_ROWS", 64)
    monkeypatch.setattr(face_matrix, "SEARCH_ROWS", 24)  # blocks cut into uneven pieces
    rng = np.random.default_rng(3)
    now = utcnow()
    faces = EventFaces(now, now, dim)
    probe = rng.standard_normal(dim).astype(np.float32)
    probe /= np.linalg.norm(probe)
    first_block = None
    photos: dict[str, np.ndarray] = {}
    for n in range(60):  # 1-8 faces a photo, some a near copy of the probe, some at full scale
        vectors = rng.standard_normal((1 + n % 8, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        if n % 5 == 0:
            vectors[0] = probe + 0.05 * vectors[0]
            vectors[0] /= np.linalg.norm(vectors[0])
        if n == 7:
            vectors[0] = np.sign(probe)  # every coordinate at +-SCALE after quantising
        photos[f"p{n:03d}"] = vectors
        faces.append(f"p{n:03d}", vectors, now)
        first_block = first_block if first_block is not None else faces.blocks[0]
    faces.append("p005", photos["p005"][1:], now + timedelta(seconds=1))  # reprocessed: its old rows die
    photos["p005"] = photos["p005"][1:]
    assert len(faces.blocks) > 3 and faces.blocks[0] is first_block
    assert faces.live == sum(len(v) for v in photos.values())
    for threshold in (-1.0, 0.0, 0.2, 0.9):
        bar = (threshold - INT8_MARGIN) * SCALE * SCALE
        query = quantised(probe).astype(np.int64)
        exact = {p for p, v in photos.items() if (quantised(v).astype(np.int64) @ query >= bar).any()}
        assert faces.search(probe, threshold) == exact
        for first_row in (1, 37, 64, 150, faces.size):  # a search completing an earlier one: rows from there on
            later = set()
            for p, v in photos.items():
                start, end, _ = faces.rows_of(p)
                if end > first_row and (quantised(v[max(first_row - start, 0):]).astype(np.int64) @ query >= bar).any():
                    later.add(p)
            assert faces.search(probe, threshold, first_row) == later


@pytest.mark.postgres
def test_a_threshold_lowered_while_a_photo_computes_is_applied_to_every_runner(pg_world, monkeypatch):
    """A photo keeps only the runners over the threshold it read before the lock; when the lock
    shows a lower one (a PATCH committed meanwhile), it computes again (PostgreSQL: the PATCH's
    update does not wait for the photo's transaction)."""
    from sqlalchemy import update

    from app.db import Event

    event = SyntheticEvent(pg_world)
    runner = event.enrol("r@example.com", vector(0))
    other = vector(1) - (vector(1) @ vector(0)) * vector(0)
    halfway = 0.5 * vector(0) + np.sqrt(0.75) * other / np.linalg.norm(other)  # cosine 0.5 to the runner
    with unit_of_work(event.make_session) as uow:
        uow.session.execute(update(Event).where(Event.id == event.id).values(match_threshold=0.6))
    share_event = matching.share_event

    def patched_meanwhile(uow, event_id):  # type: ignore[no-untyped-def]
        with unit_of_work(event.make_session) as other_uow:
            other_uow.session.execute(update(Event).where(Event.id == event_id).values(match_threshold=0.45))
        return share_event(uow, event_id)

    monkeypatch.setattr(matching, "share_event", patched_meanwhile)
    assert event.matched(event.photo([halfway])) == {runner}


@pytest.mark.parametrize("db", BOTH_DATABASES)
def test_a_photo_processed_for_the_first_time_reads_no_stored_matches(db, request):
    """A match needs a face, and a new photo's faces are its transaction's own: its matching
    writes its matches without reading the photo's stored ones (one query less per photo), and
    a photo processed again reads them, since it replaces them."""
    from app.db import Photo

    world = request.getfixturevalue(db)
    event = SyntheticEvent(world)
    runner = event.enrol("r@example.com", vector(0))
    event.photo([vector(1)])  # the runner matrix cached, off the count

    def reads_of_matches(executed: list[tuple[str, object]]) -> list[str]:
        return [statement for statement, _ in executed
                if statement.lstrip().startswith("SELECT") and "FROM matches" in statement]

    with sql_run(world) as executed:
        photo = event.photo([vector(0), vector(2)])
    assert event.matched(photo) == {runner}
    assert reads_of_matches(executed) == []
    with unit_of_work(event.make_session, RecordingSender()) as uow:  # processed again: reads and replaces
        with sql_run(world) as executed:
            matching.on_photo_done(uow, uow.session.get(Photo, photo))
    assert len(reads_of_matches(executed)) == 1 and event.matched(photo) == {runner}
