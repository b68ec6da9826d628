from __future__ import annotations

import hashlib

from sqlalchemy import select

from app.db import Photo
from app.db.session import make_engine, make_sessionmaker
from tests.images import as_png, identity_photo, make_zip
from app.jobs import PROCESS_PHOTO


def _event(client) -> str:
    return client.post("/api/v1/events", json={"name": "Uploads"}).json()["id"]


def _photos_in_db(settings) -> list[Photo]:
    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine)() as session:
        rows = list(session.scalars(select(Photo)))
    engine.dispose()
    return rows


def test_many_files_and_a_zip_become_photos_or_rejections(client, settings, faces_dir):
    event_id = _event(client)
    a = identity_photo(faces_dir, "andy_roddick", 1).read_bytes()
    b = identity_photo(faces_dir, "andy_roddick", 2).read_bytes()
    png = as_png(identity_photo(faces_dir, "andy_roddick", 3))
    archive = make_zip({
        "race/km5/one.jpg": identity_photo(faces_dir, "andy_roddick", 4).read_bytes(),
        "race/km5/two.png": as_png(identity_photo(faces_dir, "andy_roddick", 5)),
        "race/empty-dir/": b"",
        ".DS_Store": b"junk",
        "__MACOSX/race/._one.jpg": b"junk",
        "race/notes.txt": b"not a photo",
        "inner.zip": make_zip({"x.jpg": a}),
    })
    files = [("files", ("a.jpg", a)), ("files", ("b.jpg", b)), ("files", ("c.png", png)),
             ("files", ("batch.zip", archive)), ("files", ("fake.jpg", b"hello, not a jpeg")),
             ("files", ("empty.jpg", b""))]
    response = client.post(f"/api/v1/events/{event_id}/photos", files=files)
    assert response.status_code == 202, response.text
    body = response.json()
    names = sorted(p["filename"] for p in body["photos"])
    assert names == ["a.jpg", "b.jpg", "batch.zip/race/km5/one.jpg", "batch.zip/race/km5/two.png", "c.png"]
    assert all(p["status"] == "pending" and p["duplicate"] is False for p in body["photos"])
    rejected = {r["filename"]: r["code"] for r in body["rejected"]}
    assert rejected == {"batch.zip/race/notes.txt": "unsupported_type", "batch.zip/inner.zip": "nested_archive",
                        "fake.jpg": "unsupported_type", "empty.jpg": "empty_file"}
    assert all(r["detail"] for r in body["rejected"])

    # each new photo was queued once, after its commit
    sent = client.app.state.sender.sent
    assert sorted(args[0] for name, args in sent if name == PROCESS_PHOTO) == sorted(p["id"] for p in body["photos"])

    # originals are kept byte for byte
    store = client.app.state.store
    by_id = {p.id: p for p in _photos_in_db(settings)}
    for uploaded, original in zip(sorted(body["photos"], key=lambda p: p["filename"])[:2], (a, b)):
        photo = by_id[uploaded["id"]]
        with store.open(photo.storage_key) as f:
            assert f.read() == original
        assert photo.sha256 == hashlib.sha256(original).hexdigest() and photo.size_bytes == len(original)


def test_same_bytes_again_is_a_duplicate(client, faces_dir):
    event_id = _event(client)
    data = identity_photo(faces_dir, "andy_roddick", 1).read_bytes()
    first = client.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("x.jpg", data))]).json()
    second = client.post(f"/api/v1/events/{event_id}/photos",
                         files=[("files", ("renamed.jpg", data)), ("files", ("again.jpg", data))]).json()
    assert [p["duplicate"] for p in second["photos"]] == [True, True]
    assert {p["id"] for p in second["photos"]} == {first["photos"][0]["id"]}
    assert len(client.app.state.sender.sent) == 1
    # another event may hold the same bytes as its own photo
    other = _event(client)
    third = client.post(f"/api/v1/events/{other}/photos", files=[("files", ("x.jpg", data))]).json()
    assert third["photos"][0]["duplicate"] is False


def test_listing_pages_through_photos(client, faces_dir):
    event_id = _event(client)
    files = [("files", (f"{n}.jpg", identity_photo(faces_dir, "andy_roddick", n).read_bytes())) for n in range(1, 6)]
    client.post(f"/api/v1/events/{event_id}/photos", files=files)
    seen, cursor = [], None
    while True:
        page = client.get(f"/api/v1/events/{event_id}/photos",
                          params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [p["filename"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"{n}.jpg" for n in range(1, 6)]
    assert client.get(f"/api/v1/events/{event_id}/photos", params={"status": "done"}).json()["items"] == []
    photo = client.get(f"/api/v1/photos/{page['items'][0]['id']}").json()
    assert photo["status"] == "pending" and photo["faces"] == [] and photo["event_id"] == event_id


def test_upload_errors_are_problems(client, settings, faces_dir):
    event_id = _event(client)
    no_files = client.post(f"/api/v1/events/{event_id}/photos", data={"other": "x"})
    assert no_files.status_code == 422 and no_files.json()["code"] == "no_files"
    unknown = client.post("/api/v1/events/nope/photos", files=[("files", ("a.jpg", b"x"))])
    assert unknown.status_code == 404 and unknown.json()["code"] == "event_not_found"
    too_big = client.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("a.jpg", b"x"))],
                          headers={"Content-Length": str(settings.max_request_bytes + 1)})
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large"


def test_photos_can_be_queued_several_per_task_for_gpu_batching(tmp_path, faces_dir):
    from tests.conftest import api_client, migrated_settings

    with api_client(migrated_settings(tmp_path / "data", photos_per_task=3)) as client:
        event_id = _event(client)
        files = [("files", (f"{n}.jpg", identity_photo(faces_dir, "tim_henman", n).read_bytes())) for n in range(1, 6)]
        body = client.post(f"/api/v1/events/{event_id}/photos", files=files).json()
        sent = client.app.state.sender.sent
    ids = [p["id"] for p in body["photos"]]
    assert sent == [(PROCESS_PHOTO, (ids[:3],)), (PROCESS_PHOTO, (ids[3:],))]


def test_a_failed_store_leaves_no_row_and_failed_or_orphaned_photos_are_requeued(client, settings, faces_dir,
                                                                                 monkeypatch):
    """Issue 12.4: on SQLite the savepoint's RELEASE commits, so the row must come after the file;
    the same bytes uploaded again re-queue a photo that failed or never got its file."""
    from app.db.session import unit_of_work

    event_id = _event(client)
    data = identity_photo(faces_dir, "andy_roddick", 1).read_bytes()
    store = client.app.state.store
    real_put_file = store.put_file

    def disk_full(key, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "put_file", disk_full)
    body = client.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("x.jpg", data))]).json()
    assert body["photos"] == [] and [r["code"] for r in body["rejected"]] == ["storage_failed"]
    assert _photos_in_db(settings) == [] and client.app.state.sender.sent == []

    monkeypatch.setattr(store, "put_file", real_put_file)
    body = client.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("x.jpg", data))]).json()
    [uploaded] = body["photos"]
    assert uploaded["duplicate"] is False and uploaded["status"] == "pending"
    client.app.state.sender.sent.clear()

    # it failed in the worker (say, after 3 attempts): the same bytes again process it again
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    with unit_of_work(sessions) as uow:
        photo = uow.session.get(Photo, uploaded["id"])
        photo.status, photo.error, photo.attempts = "failed", "processing_failed: boom", 3
    again = client.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("x.jpg", data))]).json()
    assert again["photos"] == [{"id": uploaded["id"], "filename": "x.jpg", "status": "pending", "duplicate": False}]
    assert client.app.state.sender.sent == [(PROCESS_PHOTO, (uploaded["id"],))]
    [photo] = _photos_in_db(settings)
    assert (photo.status, photo.error, photo.attempts) == ("pending", None, 0)

    # an orphan: pending, but its original is not in the store
    client.app.state.sender.sent.clear()
    store.delete(photo.storage_key)
    again = client.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("x.jpg", data))]).json()
    assert again["photos"][0]["duplicate"] is False and store.exists(photo.storage_key)
    assert client.app.state.sender.sent == [(PROCESS_PHOTO, (uploaded["id"],))]
    # a pending photo that has its file is an ordinary duplicate
    client.app.state.sender.sent.clear()
    assert client.post(f"/api/v1/events/{event_id}/photos",
                       files=[("files", ("x.jpg", data))]).json()["photos"][0]["duplicate"] is True
    assert client.app.state.sender.sent == []
    engine.dispose()
