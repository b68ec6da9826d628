"""Issue 12.8: biometric templates end with the event's retention period, galleries do not;
consent is recorded with its text version and source; erasure leaves no e-mail behind."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from app.db import Delivery, Event, Face, Match, Photo, Runner
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import gallery, matching, notify, privacy, runners
from app.storage import LocalPhotoStore
from tests.app.test_erasure import A, B
from tests.conftest import organisation_for_tests, RecordingSender, api_client, migrated_settings
from tests.images import identity_photo

TODAY = date.today()


class World:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        self.make_session = make_sessionmaker(self.engine)
        self.store = LocalPhotoStore(settings.photos_dir)

    def uow(self):
        return unit_of_work(self.make_session, RecordingSender())

    def add_event(self, event_id: str, starts_on: date | None, **fields) -> None:
        with self.uow() as uow:
            uow.session.add(Event(organisation_id=organisation_for_tests(uow).id, id=event_id, name=f"Run {event_id}",
                                  slug=event_id, match_threshold=0.5, starts_on=starts_on, **fields))
            uow.session.flush()
            for n, emb in enumerate((A, B)):
                photo = Photo(id=f"{event_id}-p{n}", event_id=event_id, filename=f"{n}.jpg",
                              sha256=f"{event_id}{n}".ljust(64, "0"), size_bytes=1, content_type="image/jpeg", storage_key=f"k/{event_id}/{n}", status="done",
                              thumb_key=f"k/{event_id}/{n}.thumb")
                uow.session.add(photo)
                uow.session.flush()
                uow.session.add(Face(id=f"{event_id}-f{n}", photo_id=photo.id, event_id=event_id, x1=0, y1=0, x2=1,
                                     y2=1, score=1, size_px=50, landmarks=[], embedding=emb, model_id="m"))
                uow.session.add(Runner(id=f"{event_id}-r{n}", event_id=event_id, name=f"Runner {n}",
                                       email=f"runner{n}@{event_id}.example.org", embedding=emb, model_id="m"))
                self.store.put_bytes(photo.storage_key, b"original")
                self.store.put_bytes(photo.thumb_key, b"thumb")
        with self.uow() as uow:
            matching.rematch_event(uow, matching.lock_event(uow, event_id))

    def rows(self, model, event_id: str) -> list:
        with self.uow() as uow:
            column = model.id if model is Event else model.event_id
            return list(uow.session.scalars(select(model).where(column == event_id)))


@pytest.fixture
def world(tmp_path):
    w = World(migrated_settings(tmp_path / "data"))
    yield w
    w.engine.dispose()


def test_retention_ends_after_the_event_date_or_its_creation():
    created = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    dated = Event(starts_on=date(2026, 5, 10), retention_days=90, created_at=created)
    undated = Event(starts_on=None, retention_days=30, created_at=created)
    assert privacy.biometrics_expire_at(dated) == datetime(2026, 8, 8, tzinfo=timezone.utc)
    assert privacy.biometrics_expire_at(undated) == datetime(2026, 3, 31, tzinfo=timezone.utc)


def test_the_sweeper_purges_templates_and_similarities_after_retention_and_galleries_stay(world):
    world.add_event("old", TODAY - timedelta(days=91))  # default: 90 days
    world.add_event("new", TODAY - timedelta(days=89))
    matches_before = {(m.runner_id, m.photo_id) for m in world.rows(Match, "old")}
    assert len(matches_before) == 2

    with world.uow() as uow:
        assert privacy.purge_expired_events(uow) == ["old"]
    with world.uow() as uow:
        assert privacy.purge_expired_events(uow) == []  # nothing left to purge

    assert all(f.embedding is None for f in world.rows(Face, "old"))
    assert all(r.embedding is None for r in world.rows(Runner, "old"))
    old_matches = world.rows(Match, "old")
    assert {(m.runner_id, m.photo_id) for m in old_matches} == matches_before
    assert all(m.similarity is None for m in old_matches)
    assert world.rows(Event, "old")[0].biometrics_purged_at is not None
    # the event within its retention is untouched
    assert all(f.embedding is not None for f in world.rows(Face, "new"))
    assert all(m.similarity is not None for m in world.rows(Match, "new"))

    # a recompute after the purge (new threshold, "not me") keeps the stored matches
    with world.uow() as uow:
        matching.update_event(uow, "old", match_threshold=0.9)
    with world.uow() as uow:
        gallery.reject_photo(uow, uow.session.get(Runner, "old-r1"), "old-p1")
    assert {(m.runner_id, m.photo_id) for m in world.rows(Match, "old")} == {("old-r0", "old-p0")}

    # the gallery still works, says the templates are gone, and the API shows no similarity
    with api_client(world.settings) as client:
        page = client.get(gallery.gallery_url(world.settings, "old-r0").removeprefix(world.settings.public_base_url))
        assert page.status_code == 200 and "old-p0" in page.text
        assert "face templates were deleted" in " ".join(page.text.split())
        assert client.get("/api/v1/runners/old-r0/matches").json()["items"] == [
            {"photo_id": "old-p0", "face_id": "old-f0", "similarity": None, "source": "face"}]
        live = client.get(gallery.gallery_url(world.settings, "new-r0").removeprefix(world.settings.public_base_url))
        expires = privacy.biometrics_expire_at(world.rows(Event, "new")[0]).date().isoformat()
        assert expires in live.text  # "kept until ..."
        # enrolling after the purge is refused: there is nothing left to match against
        selfie = b"\xff\xd8\xff"
        closed = client.post("/api/v1/events/old/runners", data={"name": "Late", "email": "late@example.org",
                                                                  "consent": "true"},
                             files={"selfie": ("s.jpg", selfie, "image/jpeg")})
        assert closed.status_code == 409 and closed.json()["code"] == "retention_ended"


def test_retention_days_is_set_per_event_through_the_api(world):
    with api_client(world.settings) as client:
        default = client.post("/api/v1/events", json={"name": "Default", "starts_on": "2026-05-10"}).json()
        assert default["retention_days"] == 90
        assert default["biometrics_expire_at"].startswith("2026-08-08")
        short = client.post("/api/v1/events", json={"name": "Short", "retention_days": 7}).json()
        assert short["retention_days"] == 7
        patched = client.patch(f"/api/v1/events/{short['id']}", json={"retention_days": 30}).json()
        assert patched["retention_days"] == 30
        for bad in (0, -1, 3651, "x"):
            assert client.post("/api/v1/events", json={"name": "Bad", "retention_days": bad}).status_code == 422


def test_consent_is_recorded_with_its_version_and_source(world, faces_dir):
    world.add_event("ev", TODAY)
    selfie = identity_photo(faces_dir, "andy_roddick", 1).read_bytes()
    form = {"name": "Andy", "consent": "true"}
    with api_client(world.settings) as client:
        page_form = " ".join(client.get("/e/ev").text.split())
        assert f'name="consent_version" value="{privacy.CONSENT_VERSION}"' in page_form
        assert "90 days after the event" in page_form
        by_page = client.post("/e/ev", data={**form, "email": "andy1@example.org",
                                             "consent_version": privacy.CONSENT_VERSION},
                              files={"selfie": ("me.jpg", selfie, "image/jpeg")}, headers={"Authorization": ""})
        assert by_page.status_code == 200, by_page.text[:300]
        by_api = client.post("/api/v1/events/ev/runners", data={**form, "email": "andy2@example.org",
                                                                 "consent_version": "partner-tos-4"},
                             files={"selfie": ("me.jpg", selfie, "image/jpeg")})
        assert by_api.status_code == 201, by_api.text
    key_id = client.headers["Authorization"].split("_")[1]
    recorded = {r.email: r for r in world.rows(Runner, "ev")}
    page_runner, api_runner = recorded["andy1@example.org"], recorded["andy2@example.org"]
    assert (page_runner.consent_source, page_runner.consent_version, page_runner.enrolled_by_key_id) == (
        "page", privacy.CONSENT_VERSION, None)
    assert (api_runner.consent_source, api_runner.consent_version, api_runner.enrolled_by_key_id) == (
        "api", "partner-tos-4", key_id)


def test_erasure_leaves_no_outbox_file_and_logs_hold_no_address(world, caplog):
    world.add_event("ev", TODAY)
    caplog.set_level(logging.DEBUG)
    with world.uow() as uow:
        assert notify.notify_runner(uow, "ev-r0") == 1
    delivery = world.rows(Delivery, "ev")[0]
    outcome = notify.send_delivery(world.settings, world.make_session, world.store, delivery.id,
                                   task_id="t", last_try=False)
    assert outcome == "sent"
    eml = list(world.settings.outbox_dir.glob("*.eml"))
    assert len(eml) == 1 and b"runner0@ev.example.org" in eml[0].read_bytes()
    with world.uow() as uow:
        runners.delete_runner(uow, world.store, "ev-r0", outbox_dir=world.settings.outbox_dir)
    assert list(world.settings.outbox_dir.glob("*.eml")) == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "runner0@ev.example.org" not in logged and "Runner 0" not in logged


def test_the_sweeper_task_runs_the_retention_purge(world, monkeypatch):
    from app.jobs import SWEEP_STALE_WORK
    from worker import context, tasks  # noqa: F401 (registers the tasks)
    from worker.celery_app import create_worker_app

    world.add_event("old", TODAY - timedelta(days=91))
    monkeypatch.setattr(context, "_context", None)  # the worker's per-process resources, for these settings
    celery = create_worker_app(world.settings)
    celery.tasks[SWEEP_STALE_WORK].apply().get()
    assert world.rows(Event, "old")[0].biometrics_purged_at is not None
    assert all(f.embedding is None for f in world.rows(Face, "old"))
    monkeypatch.setattr(context, "_context", None)
