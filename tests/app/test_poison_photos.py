"""Issue 12.3: a photo that makes the pipeline raise (not a decode error) ends `failed` with the
reason after a bounded number of attempts; it never holds back the rest of its batch; an
organiser can queue a failed photo again. The worker's real stage, with the fake face backend."""

from __future__ import annotations

import io
from datetime import timedelta

import cv2
import pytest
from PIL import Image
from sqlalchemy import update

from app.db import Photo, utcnow
from app.db.session import unit_of_work
from app.services import photos as photo_service
from app.services.processing import ProcessingContext, process_photos
from models.fake import FakeBackend, paint_face
from tests.conftest import RecordingSender, api_client, migrated_settings
from worker.dispatch import PROCESS_PHOTO

POISON = (0, 255, 0)  # a green corner: this backend's "image that crashes OpenCV"


class PoisonedBackend(FakeBackend):
    def detect(self, images):
        if any(tuple(int(v) for v in image[0, 0]) == POISON for image in images):
            raise cv2.error("OpenCV(4.10.0) resize.cpp:4152: error: (-215:Assertion failed) !ssize.empty()")
        return super().detect(images)


def jpeg(identity: int, *, poison: bool = False) -> bytes:
    image = Image.new("RGB", (320, 240), (90, 90, 90))
    paint_face(image, (100, 60, 180, 160), identity)
    if poison:
        image.paste(POISON, (0, 0, 16, 16))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # lossless: the corner stays exactly green
    return buffer.getvalue()


@pytest.fixture
def world(tmp_path):
    settings = migrated_settings(tmp_path / "data", photos_per_task=3, photo_max_attempts=3)
    with api_client(settings) as client:
        state = client.app.state
        ctx = ProcessingContext(settings, state.make_session, state.store, PoisonedBackend(), RecordingSender())
        yield client, ctx


def upload(client, files: dict[str, bytes]) -> dict[str, str]:
    event = client.post("/api/v1/events", json={"name": "Poison"}).json()
    body = client.post(f"/api/v1/events/{event['id']}/photos",
                       files=[("files", (name, data)) for name, data in files.items()]).json()
    return {p["filename"]: p["id"] for p in body["photos"]}


def photo(client, photo_id: str) -> dict:
    return client.get(f"/api/v1/photos/{photo_id}").json()


def test_a_poison_photo_fails_after_its_attempts_and_never_sinks_its_batch(world):
    client, ctx = world
    ids = upload(client, {"a.png": jpeg(10), "poison.png": jpeg(20, poison=True), "b.png": jpeg(30)})
    outcomes = process_photos(ctx, list(ids.values()), task_id="batch-1")
    assert outcomes == {ids["a.png"]: "done", ids["b.png"]: "done", ids["poison.png"]: "retry_later"}
    assert len(photo(client, ids["a.png"])["faces"]) == 1
    poisoned = photo(client, ids["poison.png"])
    assert poisoned["status"] == "pending" and poisoned["error"].startswith("attempt 1 of 3 failed: error: OpenCV")

    # the sweeper queues it again (after stale_after); each try counts
    with unit_of_work(ctx.make_session, sender := RecordingSender()) as uow:
        uow.session.execute(update(Photo).where(Photo.id == ids["poison.png"])
                            .values(queued_at=utcnow() - timedelta(hours=1)))
    with unit_of_work(ctx.make_session, sender) as uow:
        swept = photo_service.sweep_stale_photos(uow, stale_after=timedelta(minutes=10), max_attempts=3)
    assert swept.requeued == [ids["poison.png"]] and sender.sent == [(PROCESS_PHOTO, (ids["poison.png"],))]
    assert process_photos(ctx, [ids["poison.png"]], task_id="try-2") == {ids["poison.png"]: "retry_later"}
    assert process_photos(ctx, [ids["poison.png"]], task_id="try-3") == {ids["poison.png"]: "failed"}
    poisoned = photo(client, ids["poison.png"])
    assert poisoned["status"] == "failed"
    assert poisoned["error"].startswith("processing_failed: error: OpenCV") and "after 3 attempts" in poisoned["error"]
    # done for good: neither a late duplicate message nor the sweeper brings it back
    assert process_photos(ctx, [ids["poison.png"]], task_id="late") == {ids["poison.png"]: "skipped"}
    with unit_of_work(ctx.make_session, RecordingSender()) as uow:
        assert photo_service.sweep_stale_photos(uow, stale_after=timedelta(0), max_attempts=3).requeued == []
    stats = client.get(f"/api/v1/events/{poisoned['event_id']}").json()["stats"]
    assert (stats["photos_done"], stats["photos_failed"], stats["photos_pending"]) == (2, 1, 0)


def test_a_photo_that_kills_its_worker_every_time_is_failed_by_the_sweeper(world):
    client, ctx = world
    [photo_id] = upload(client, {"a.png": jpeg(10)}).values()
    long_ago = utcnow() - timedelta(hours=1)
    with unit_of_work(ctx.make_session) as uow:  # claimed three times, each worker died (SIGKILL, OOM)
        uow.session.execute(update(Photo).where(Photo.id == photo_id).values(
            status="processing", attempts=3, claimed_by="dead", claimed_at=long_ago, queued_at=long_ago))
    sender = RecordingSender()
    with unit_of_work(ctx.make_session, sender) as uow:
        swept = photo_service.sweep_stale_photos(uow, stale_after=timedelta(minutes=10), max_attempts=3)
    assert swept.failed == [photo_id] and swept.requeued == [] and sender.sent == []
    failed = photo(client, photo_id)
    assert failed["status"] == "failed" and "worker stopped" in failed["error"]


def test_an_organiser_can_retry_a_failed_photo(world):
    client, ctx = world
    ids = upload(client, {"poison.png": jpeg(20, poison=True), "fine.png": jpeg(30)})
    for attempt in range(3):
        process_photos(ctx, [ids["poison.png"]], task_id=f"try-{attempt}")
    assert photo(client, ids["poison.png"])["status"] == "failed"
    client.app.state.sender.sent.clear()

    retried = client.post(f"/api/v1/photos/{ids['poison.png']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "pending" and retried.json()["error"] is None
    assert client.app.state.sender.sent == [(PROCESS_PHOTO, (ids["poison.png"],))]
    # a fresh set of attempts: the next try is attempt 1 again
    assert process_photos(ctx, [ids["poison.png"]], task_id="again") == {ids["poison.png"]: "retry_later"}
    assert photo(client, ids["poison.png"])["error"].startswith("attempt 1 of 3")

    not_failed = client.post(f"/api/v1/photos/{ids['fine.png']}/retry")
    assert not_failed.status_code == 409 and not_failed.json()["code"] == "photo_not_failed"
    assert client.post("/api/v1/photos/nope/retry").status_code == 404
    assert client.post(f"/api/v1/photos/{ids['poison.png']}/retry", headers={"Authorization": ""}).status_code == 401
