"""Claiming, redelivery and the sweeper: a photo never stays pending or processing for good."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db import Event, Photo, utcnow
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import photos as photo_service
from tests.conftest import RecordingSender, organisation_for_tests
from app.jobs import PROCESS_PHOTO

STALE = timedelta(minutes=10)


@pytest.fixture
def make_session(settings):
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_photo(make_session, *, status: str = "pending", queued_ago: timedelta = timedelta(0),
              claimed_ago: timedelta | None = None, claimed_by: str | None = None) -> str:
    with unit_of_work(make_session) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name="e", slug=f"e-{utcnow().timestamp()}",
                      match_threshold=0.5)
        uow.session.add(event)
        uow.session.flush()
        photo = Photo(event_id=event.id, filename="p.jpg", sha256="0" * 64, size_bytes=1, content_type="image/jpeg",
                      storage_key="k.jpg", status=status, queued_at=utcnow() - queued_ago,
                      claimed_at=utcnow() - claimed_ago if claimed_ago is not None else None, claimed_by=claimed_by)
        uow.session.add(photo)
    return photo.id


def claim(make_session, photo_id: str, task_id: str) -> bool:
    with unit_of_work(make_session) as uow:
        return photo_service.claim_photo(uow, photo_id, task_id=task_id, stale_after=STALE, max_attempts=3) is not None


def test_a_photo_is_claimed_once(make_session):
    photo_id = add_photo(make_session)
    assert claim(make_session, photo_id, "task-1")
    assert not claim(make_session, photo_id, "task-2")  # a duplicate message finds it taken
    assert claim(make_session, photo_id, "task-1")  # a redelivery of the same task takes it back


def test_a_stale_claim_can_be_taken_over(make_session):
    photo_id = add_photo(make_session, status="processing", claimed_ago=timedelta(minutes=11), claimed_by="dead")
    assert claim(make_session, photo_id, "task-2")


def test_done_photos_are_not_claimed_again(make_session):
    photo_id = add_photo(make_session, status="done")
    assert not claim(make_session, photo_id, "task-1")


def test_sweeper_requeues_lost_and_abandoned_photos_only(make_session):
    lost = add_photo(make_session, queued_ago=timedelta(minutes=30))
    abandoned = add_photo(make_session, status="processing", queued_ago=timedelta(hours=1),
                          claimed_ago=timedelta(minutes=20), claimed_by="dead")
    fresh = add_photo(make_session, queued_ago=timedelta(minutes=1))
    working = add_photo(make_session, status="processing", claimed_ago=timedelta(minutes=1), claimed_by="alive")
    done = add_photo(make_session, status="done", queued_ago=timedelta(hours=2))
    sender = RecordingSender()
    with unit_of_work(make_session, sender) as uow:
        result = photo_service.sweep_stale_photos(uow, stale_after=STALE, max_attempts=3)
    assert sorted(result.requeued) == sorted([lost, abandoned])
    assert sorted(args[0] for _, args in sender.sent) == sorted([lost, abandoned])
    assert {name for name, _ in sender.sent} == {PROCESS_PHOTO}
    # re-queued work is not re-sent again until it is stale once more
    with unit_of_work(make_session, RecordingSender()) as uow:
        assert photo_service.sweep_stale_photos(uow, stale_after=STALE, max_attempts=3).requeued == []
    del fresh, working, done


def test_nothing_is_sent_when_the_transaction_rolls_back(make_session):
    add_photo(make_session, queued_ago=timedelta(minutes=30))
    sender = RecordingSender()
    with pytest.raises(RuntimeError):
        with unit_of_work(make_session, sender) as uow:
            photo_service.sweep_stale_photos(uow, stale_after=STALE, max_attempts=3)
            raise RuntimeError("boom")
    assert sender.sent == []


def test_sweeper_rematches_runners_whose_message_was_lost(make_session):
    from app.db import Runner
    from app.services import matching
    from app.jobs import MATCH_RUNNER

    with unit_of_work(make_session) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name="e", slug="runners-e", match_threshold=0.5)
        uow.session.add(event)
        uow.session.flush()

        def runner(**fields) -> Runner:
            row = Runner(event_id=event.id, name="r", email="r@example.org", embedding=b"\0" * 512,
                         model_id="m", **fields)
            uow.session.add(row)
            return row

        long_ago = utcnow() - timedelta(minutes=30)
        lost = runner(created_at=long_ago, consent_at=long_ago)
        matched = runner(created_at=long_ago, consent_at=long_ago, matched_at=utcnow())
        fresh = runner()
        reenrolled = runner(created_at=long_ago)  # enrolled again just now: its message is on its way
    sender = RecordingSender()
    with unit_of_work(make_session, sender) as uow:
        assert matching.sweep_unmatched_runners(uow, stale_after=STALE) == [lost.id]
    assert sender.sent == [(MATCH_RUNNER, (lost.id,))]
    with unit_of_work(make_session) as uow:  # matching the runner settles it
        matching.match_runner(uow, lost.id)
    with unit_of_work(make_session, RecordingSender()) as uow:
        assert matching.sweep_unmatched_runners(uow, stale_after=STALE) == []
    del matched, fresh, reenrolled


def test_sweeper_leaves_a_waiting_backlog_alone(make_session):
    """Review C12: while the photo queue still holds messages, a photo pending for long is waiting
    its turn, not lost; a stale claim (a dead worker) is re-queued all the same."""
    waiting = add_photo(make_session, queued_ago=timedelta(hours=2))
    abandoned = add_photo(make_session, status="processing", queued_ago=timedelta(hours=1),
                          claimed_ago=timedelta(minutes=30), claimed_by="dead")
    sender = RecordingSender()
    with unit_of_work(make_session, sender) as uow:
        result = photo_service.sweep_stale_photos(uow, stale_after=STALE, max_attempts=3, backlog=True)
    assert result.requeued == [abandoned] and sender.sent == [(PROCESS_PHOTO, (abandoned,))]
    with unit_of_work(make_session, sender) as uow:  # the queue has drained: now it counts as lost
        assert photo_service.sweep_stale_photos(uow, stale_after=STALE, max_attempts=3).requeued == [waiting]


def test_sweeper_reads_the_photo_queue_length_from_the_embedded_broker(settings):
    from worker.celery_app import create_celery
    from worker.tasks import _photo_queue_length

    celery = create_celery(settings)
    assert _photo_queue_length(celery) == 0
    celery.send_task(PROCESS_PHOTO, args=["a"])
    celery.send_task(PROCESS_PHOTO, args=["b"])
    assert _photo_queue_length(celery) == 2
