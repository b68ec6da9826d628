"""The S3 photo store against a real S3-compatible server on loopback (moto in server mode)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from app.storage import S3PhotoStore, make_store  # noqa: E402
from tests.conftest import free_port  # noqa: E402


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sessions(settings):
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def s3_store(s3_endpoint, monkeypatch, request):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"photos-{request.node.name[:20].replace('_', '-').lower()}"
    store = make_store(f"s3://{bucket}/finishline", None)  # type: ignore[arg-type]
    assert isinstance(store, S3PhotoStore)
    store.client.create_bucket(Bucket=bucket)
    return store


def test_put_open_local_path_exists_delete(s3_store, tmp_path):
    staged = tmp_path / "staged.jpg"
    staged.write_bytes(b"original bytes")
    s3_store.put_file("events/e1/originals/p1.jpg", staged)
    assert not staged.exists()  # moved into the store
    s3_store.put_bytes("events/e1/thumbs/p1.jpg", b"thumb")
    assert s3_store.open("events/e1/originals/p1.jpg").read() == b"original bytes"
    with s3_store.local_path("events/e1/thumbs/p1.jpg") as path:
        assert path.read_bytes() == b"thumb"
    listed = s3_store.client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]
    assert {o["Key"] for o in listed} == {"finishline/events/e1/originals/p1.jpg", "finishline/events/e1/thumbs/p1.jpg"}
    assert s3_store.exists("events/e1/thumbs/p1.jpg")
    s3_store.delete("events/e1/thumbs/p1.jpg")
    assert not s3_store.exists("events/e1/thumbs/p1.jpg")
    s3_store.delete("events/e1/never-there.jpg")  # missing keys are ignored


def test_missing_objects_are_file_not_found_for_every_reader(s3_store):
    with pytest.raises(FileNotFoundError):
        s3_store.open("events/e1/missing.jpg")
    with pytest.raises(FileNotFoundError):  # the worker turns this into `missing_original`
        with s3_store.local_path("events/e1/missing.jpg"):
            pass
    with pytest.raises(ValueError):
        s3_store.put_bytes("../escape", b"x")


def test_worker_processes_a_photo_stored_in_s3(s3_store, settings, sessions):
    """The photo stage reads the original from S3 and writes preview and thumbnail back."""
    from app.db import Event, Organisation, Photo
    from app.db.session import unit_of_work
    from app.services.processing import ProcessingContext, process_photos
    from models.fake import FakeBackend, paint_face
    from tests.conftest import RecordingSender

    image = Image.new("RGB", (3200, 2400), (40, 110, 60))
    paint_face(image, (400, 400, 700, 700), 9)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    with unit_of_work(sessions) as uow:
        organisation = Organisation(name="S3", slug="s3-org")
        uow.session.add(organisation)
        uow.session.flush()
        event = Event(name="S3", slug="s3-test", match_threshold=0.5, organisation_id=organisation.id)
        uow.session.add(event)
        uow.session.flush()
        photos = [Photo(event_id=event.id, filename=f"{n}.jpg", sha256=f"{n:064d}", size_bytes=len(buf.getvalue()),
                        content_type="image/jpeg", storage_key=f"events/{event.id}/originals/{n}.jpg") for n in (1, 2)]
        uow.session.add_all(photos)
        uow.session.flush()
        ids = [p.id for p in photos]
        event_id = event.id
    s3_store.put_bytes(f"events/{event_id}/originals/1.jpg", buf.getvalue())  # photo 2 was never stored
    ctx = ProcessingContext(settings, sessions, s3_store, FakeBackend(), RecordingSender())
    outcomes = process_photos(ctx, ids, task_id="t1")
    assert outcomes == {ids[0]: "done", ids[1]: "failed"}
    with unit_of_work(sessions) as uow:
        done, failed = uow.session.get(Photo, ids[0]), uow.session.get(Photo, ids[1])
        assert done.face_count == 1 and (done.width, done.height) == (3200, 2400)
        assert failed.error.startswith("missing_original")
        preview_key, thumb_key = done.preview_key, done.thumb_key
    assert Image.open(s3_store.open(preview_key)).size == (1600, 1200)
    assert Image.open(s3_store.open(thumb_key)).size == (400, 300)
