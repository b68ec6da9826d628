"""Issue 12.7: erasing a runner never hands the faces that were theirs to anyone else."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from app.db import Event, Face, Match, Photo, Runner
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import gallery, matching, runners
from app.storage import LocalPhotoStore
from tests.conftest import organisation_for_tests, RecordingSender, migrated_settings

DIM = 8


def vector(*weights: float) -> bytes:
    v = np.zeros(DIM, np.float32)
    v[:len(weights)] = weights
    return (v / np.linalg.norm(v)).astype(np.float32).tobytes()


# Runner A, and B who looks a lot like A (a sibling): cos(A, B) = 0.8, above the threshold.
A, B, C = vector(1, 0), vector(0.8, 0.6), vector(0.8, -0.6)
THRESHOLD = 0.5


class Db:
    def __init__(self, settings) -> None:
        self.engine = make_engine(settings.resolved_database_url)
        self.make_session = make_sessionmaker(self.engine)
        self.store = LocalPhotoStore(settings.photos_dir)

    def uow(self):
        return unit_of_work(self.make_session, RecordingSender())

    def matches(self) -> set[tuple[str, str]]:
        with self.uow() as uow:
            return {(m.runner_id, m.face_id) for m in uow.session.scalars(select(Match))}


@pytest.fixture
def db(tmp_path):
    db = Db(migrated_settings(tmp_path / "data"))
    with db.uow() as uow:
        uow.session.add(Event(organisation_id=organisation_for_tests(uow).id, id="ev", name="Run", slug="run",
                              match_threshold=THRESHOLD))
        for pid in ("p1", "p2"):
            uow.session.add(Photo(id=pid, event_id="ev", filename=f"{pid}.jpg", sha256=pid * 32, size_bytes=1,
                                  content_type="image/jpeg", storage_key=f"k/{pid}", status="done"))
        uow.session.flush()
        # p1: A's face, and A's face again in a shop window (most like A, but A has a better one).
        # p2: A's face.
        for fid, pid, emb in (("f1", "p1", A), ("f1b", "p1", vector(1, 0.1)), ("f2", "p2", A)):
            uow.session.add(Face(id=fid, photo_id=pid, event_id="ev", x1=0, y1=0, x2=1, y2=1, score=1, size_px=50,
                                 landmarks=[], embedding=emb, model_id="m"))
        for rid, emb in (("ra", A), ("rb", B)):
            uow.session.add(Runner(id=rid, event_id="ev", name=rid, email=f"{rid}@example.org", embedding=emb,
                                   model_id="m"))
    with db.uow() as uow:
        matching.rematch_event(uow, matching.lock_event(uow, "ev"))
    yield db
    db.engine.dispose()


def test_an_erased_runners_faces_go_to_nobody_else(db):
    assert db.matches() == {("ra", "f1"), ("ra", "f2")}  # the reflection is nobody's: A has p1
    with db.uow() as uow:
        runners.delete_runner(uow, db.store, "ra")
    # Before the fix B inherited all three (0.8 > threshold): A's photos in a stranger's gallery.
    assert db.matches() == set()
    with db.uow() as uow:
        faces = {f.id: f for f in uow.session.scalars(select(Face))}
        assert all(faces[f].excluded_at for f in ("f1", "f1b", "f2"))
        # the mark is not biometric: the erased person's face templates are gone too
        assert all(faces[f].embedding is None for f in ("f1", "f1b", "f2"))
        # a whole-event recompute (new threshold) and a newcomer who looks like A change nothing
        uow.session.add(Runner(id="rc", event_id="ev", name="c", email="c@example.org", embedding=A, model_id="m"))
    with db.uow() as uow:
        matching.match_runner(uow, "rc")
        matching.rematch_event(uow, matching.lock_event(uow, "ev"))
    assert db.matches() == set()


def test_not_me_may_still_hand_the_face_to_the_next_runner(db):
    with db.uow() as uow:
        gallery.reject_photo(uow, uow.session.get(Runner, "ra"), "p2")
    assert ("rb", "f2") in db.matches()  # "not me" is a correction, not an erasure
    with db.uow() as uow:
        assert uow.session.get(Face, "f2").excluded_at is None
