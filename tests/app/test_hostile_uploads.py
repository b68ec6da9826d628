"""Hostile uploads: every file ends as a photo or a `rejected` entry with a code, never a 500;
valid but unusual images are processed to `done`; broken ones end `failed` with a readable
error; nothing from a zip reaches the filesystem under a name it chose.

The files come from tests/hostile.py, generated on the fly. Limits are set small here so the
tests stay fast; the defaults are in app/config.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from app.db import Face, Photo
from app.db.session import make_engine, make_sessionmaker
from app.face_backend import load_face_backend
from app.services.processing import ProcessingContext, process_photos
from tests import hostile
from tests.conftest import RecordingSender, api_client, make_settings, migrated_settings
from tests.images import identity_photo
from app.jobs import PROCESS_PHOTO

MB = 2**20
LIMITS = dict(max_file_bytes=2 * MB, max_request_bytes=8 * MB, max_image_pixels=50_000_000,
              max_files_per_request=20, max_archive_bytes=3 * MB, max_compression_ratio=100.0,
              max_archive_entries=100)


@pytest.fixture
def limited(tmp_path: Path):
    return migrated_settings(tmp_path / "data", **LIMITS)


@pytest.fixture
def api(limited):
    with api_client(limited) as client:
        yield client


@pytest.fixture
def event_id(api) -> str:
    return api.post("/api/v1/events", json={"name": "Hostile"}).json()["id"]


def post(api: TestClient, event_id: str, *files: tuple[str, bytes]):
    response = api.post(f"/api/v1/events/{event_id}/photos", files=[("files", f) for f in files])
    assert response.status_code == 202, response.text
    body = response.json()
    assert all(r["detail"] for r in body["rejected"])
    return {p["filename"]: p for p in body["photos"]}, {r["filename"]: r["code"] for r in body["rejected"]}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def backend():
    return load_face_backend(make_settings(Path("/nonexistent"), device="cpu"))


def process_all(settings, backend) -> dict[str, Photo]:
    """Run the worker's stage in-process on every photo (same code as the Celery task)."""
    engine = make_engine(settings.resolved_database_url)
    make_session = make_sessionmaker(engine)
    with make_session() as session:
        ids = list(session.scalars(select(Photo.id)))
    from app.storage import make_store

    ctx = ProcessingContext(settings, make_session, make_store(None, settings.photos_dir), backend, RecordingSender())
    for photo_id in ids:  # one at a time, so a broken photo cannot hide a good one's failure
        process_photos(ctx, [photo_id], task_id=f"test-{photo_id}")
    with make_session() as session:
        photos = {p.filename: p for p in session.scalars(select(Photo))}
        faces = list(session.scalars(select(Face)))
    engine.dispose()
    for photo in photos.values():
        photo.face_count = sum(f.photo_id == photo.id for f in faces)
    return photos


# --- single files ---

@pytest.mark.parametrize("name, data, code", [
    ("text.jpg", hostile.not_an_image("text"), "unsupported_type"),
    ("page.jpg", hostile.not_an_image("html"), "unsupported_type"),
    ("doc.jpg", hostile.not_an_image("pdf"), "unsupported_type"),
    ("zeros.png", hostile.not_an_image("zeros"), "unsupported_type"),
    ("program.jpg", hostile.not_an_image("elf"), "unsupported_type"),
    ("empty.jpg", b"", "empty_file"),
    ("broken-header.jpg", hostile.broken_header_jpeg(), "not_an_image"),
    ("zero-width.png", hostile.png_claiming(0, 10), "not_an_image"),
    ("huge-claim.png", hostile.png_claiming(100_000, 100_000), "image_too_large"),
    ("huge-claim.jpg", hostile.jpeg_claiming(65_000, 65_000), "image_too_large"),
    ("over-our-limit.png", hostile.png_claiming(8_000, 8_000), "image_too_large"),  # 64 MP > 50 MP
    ("bomb.png", hostile.png_decompression_bomb(), "image_too_large"),
    ("too-big.jpg", b"\xff\xd8\xff\xe0" + bytes(3 * MB), "file_too_large"),
])
def test_bad_single_files_are_rejected_with_a_code(api, event_id, limited, name, data, code):
    photos, rejected = post(api, event_id, (name, data))
    assert photos == {} and rejected == {name: code}
    assert api.app.state.sender.sent == []
    assert files_under(limited.data_dir / "tmp") == set()  # staging files are always removed


def test_a_bad_file_does_not_spoil_the_others(api, event_id):
    good = hostile.noise_jpeg(seed=1)
    photos, rejected = post(api, event_id, ("a.jpg", good), ("bomb.png", hostile.png_decompression_bomb()),
                            ("b.jpg", hostile.noise_jpeg(seed=2)))
    assert set(photos) == {"a.jpg", "b.jpg"} and rejected == {"bomb.png": "image_too_large"}


def test_unusual_but_valid_images_are_processed_to_done(api, event_id, limited, backend, faces_dir):
    face = Image.open(identity_photo(faces_dir, "andy_roddick", 1)).convert("RGB")
    face = face.resize((face.width * 2, face.height * 2))  # 300x300: the face is comfortably detectable
    variants = hostile.unusual_modes(face)
    photos, rejected = post(api, event_id, *variants.items())
    assert rejected == {} and set(photos) == set(variants)

    processed = process_all(limited, backend)
    for name in variants:
        photo = processed[name]
        assert (photo.status, photo.error) == ("done", None), name
        assert (photo.width, photo.height) == face.size, name
        assert photo.face_count >= 1, f"{name}: the face was lost in conversion"


def test_truncated_jpeg_is_accepted_then_fails_with_a_readable_error(api, event_id, limited, backend):
    photos, rejected = post(api, event_id, ("cut.jpg", hostile.truncated_jpeg(0.5)),
                            ("fine.jpg", hostile.noise_jpeg(seed=3)))
    assert rejected == {} and set(photos) == {"cut.jpg", "fine.jpg"}  # its header is intact
    processed = process_all(limited, backend)
    assert processed["cut.jpg"].status == "failed"
    assert processed["cut.jpg"].error.startswith("corrupt_image: ")
    assert processed["fine.jpg"].status == "done"  # processed alongside, unaffected


# --- request limits ---

def test_a_streamed_body_over_the_request_limit_is_413(api, event_id, limited):
    """No Content-Length (chunked): the limit is enforced while reading, still 413 problem+json."""
    boundary = "xyz"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n' \
              f'Content-Type: image/jpeg\r\n\r\n'.encode()
        for _ in range(limited.max_request_bytes // MB + 2):
            yield bytes(MB)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api.post(f"/api/v1/events/{event_id}/photos", content=body(),
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"
    assert api.get(f"/api/v1/events/{event_id}").json()["stats"]["photos"] == 0


def test_too_many_files_in_one_request_is_413(api, event_id, limited):
    files = [("files", (f"{n}.jpg", b"x")) for n in range(limited.max_files_per_request + 1)]
    response = api.post(f"/api/v1/events/{event_id}/photos", files=files)
    assert response.status_code == 413 and response.json()["code"] == "too_many_files"


# --- zips ---

def test_zip_bombs_are_refused_before_inflating(api, event_id, limited):
    bombs = {
        "ratio.zip": hostile.zip_bomb(int(1.5 * MB)),  # under the size limits, but ~1000:1
        "big-member.zip": hostile.zip_bomb(5 * MB),  # one member over max_file_bytes
        "liar.zip": hostile.zip_lying_sizes(b"\xff\xd8\xff" + bytes(5 * MB), claimed_size=1000),
        "many.zip": hostile.many_entries_zip(1000),
    }
    photos, rejected = post(api, event_id, *bombs.items())
    assert photos == {}
    assert rejected["ratio.zip/bomb.jpg"] == "suspicious_compression"
    assert rejected["big-member.zip/bomb.jpg"] == "file_too_large"
    assert rejected["liar.zip/liar.jpg"] == "corrupt_archive_entry"  # inflating stops at the claimed size
    many = {k: v for k, v in rejected.items() if k.startswith("many.zip/")}
    assert list(many.values()).count("archive_too_many_files") == 1  # one entry for all the rest
    assert len(many) == 101  # the first 100 were read (3-byte "JPEGs": not images), then one for the rest
    assert files_under(limited.data_dir / "tmp") == set()


def test_a_zip_listing_far_more_entries_than_are_read_is_refused_unopened(api, event_id, limited, monkeypatch):
    """zipfile would parse its whole central directory first (millions of tiny entries: out of
    memory); the end record's count refuses it whole, as one entry, before that."""
    from app.services import uploads

    count = 3 * limited.max_archive_entries + 1024
    tiny_files, long_names = hostile.many_entries_zip(count), hostile.long_names_zip(12)
    opened, real_zipfile = [], zipfile.ZipFile
    monkeypatch.setattr(uploads.zipfile, "ZipFile", lambda *a, **k: opened.append(a) or real_zipfile(*a, **k))
    response = api.post(f"/api/v1/events/{event_id}/photos",
                        files=[("files", ("tiny-files.zip", tiny_files)), ("files", ("long-names.zip", long_names))])
    assert response.status_code == 202, response.text
    assert response.json()["photos"] == [] and opened == []
    rejected = response.json()["rejected"]
    assert [(r["filename"], r["code"]) for r in rejected] == [
        ("tiny-files.zip", "archive_too_many_files"), ("long-names.zip", "archive_too_large")]
    assert str(count) in rejected[0]["detail"] and str(limited.max_archive_entries) in rejected[0]["detail"]


def test_a_zip_whose_end_record_understates_its_entries_is_refused_unopened(api, event_id, limited, monkeypatch):
    """zipfile reads entries until the declared directory size is used up, whatever count the
    end record gives: the entries are counted, not taken on the record's word."""
    import struct

    from app.services import uploads

    count = 3 * limited.max_archive_entries + 1024
    data = bytearray(hostile.many_entries_zip(count))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, end + 8, 10, 10)  # "10 entries" in this disk and in all
    opened, real_zipfile = [], zipfile.ZipFile
    monkeypatch.setattr(uploads.zipfile, "ZipFile", lambda *a, **k: opened.append(a) or real_zipfile(*a, **k))
    response = api.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("forged.zip", bytes(data)))])
    assert response.status_code == 202, response.text
    assert opened == [] and response.json()["photos"] == []
    [rejected] = response.json()["rejected"]
    assert (rejected["filename"], rejected["code"]) == ("forged.zip", "archive_too_many_files")
    assert f"lists {count} entries" in rejected["detail"]  # what is in it, not what the record says


def test_the_directory_check_reads_what_zipfile_reads(tmp_path):
    """Plain and zip64 end records (zipfile writes zip64 past 65535 entries), an archive comment,
    and a file that is no zip at all."""
    from app.services.zip_directory import read_directory

    for name, count, comment in (("plain.zip", 10, b""), ("comment.zip", 3, b"c" * 1000), ("zip64.zip", 70_000, b"")):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.comment = comment
            for n in range(count):
                archive.writestr(f"{n}", b"")
        with zipfile.ZipFile(path) as archive:
            size = sum(46 + len(info.filename.encode()) + len(info.extra) + len(info.comment)
                       for info in archive.infolist())
        directory = read_directory(path, max_bytes=10**8)
        assert (directory.entries, directory.size) == (count, size), name
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04" + bytes(100))
    assert read_directory(tmp_path / "not.zip", max_bytes=10**8) is None


def test_a_zip_may_not_expand_past_the_archive_limit(api, event_id):
    # a 2.5 MB zip (under the 3 MB limit for the zip itself) of five 1 MB members
    members = {f"{n}.jpg": hostile.half_compressible(MB, seed=n) for n in range(5)}
    photos, rejected = post(api, event_id, ("batch.zip", hostile.make_zip(members)))
    assert photos == {}  # the members are not real JPEGs: the first three are read and refused as such
    assert rejected == {"batch.zip/0.jpg": "not_an_image", "batch.zip/1.jpg": "not_an_image",
                        "batch.zip/2.jpg": "not_an_image", "batch.zip/3.jpg": "archive_too_large",
                        "batch.zip/4.jpg": "archive_too_large"}


def test_zip_slip_names_never_reach_the_filesystem(api, event_id, limited, tmp_path):
    target = tmp_path / "absolute-escape.jpg"
    before = files_under(tmp_path)
    photos, rejected = post(api, event_id, ("slip.zip", hostile.zip_slip(target, hostile.noise_jpeg(seed=10))))
    assert rejected == {} and len(photos) == 5  # valid photos all: only their names were hostile
    assert all(".." not in name and "\\" not in name for name in photos)
    assert not target.exists()
    new_files = files_under(tmp_path) - before
    assert new_files and all(p.is_relative_to(limited.data_dir) for p in new_files), new_files
    # the stored files are named by the service (event and photo ids), never by the zip
    photo_ids = {p["id"] for p in photos.values()}
    originals = {p for p in new_files if "originals" in p.parts}
    assert {p.stem for p in originals} == photo_ids


def test_nested_junk_empty_and_same_name_members(api, event_id):
    photo = hostile.noise_jpeg(seed=50)
    photos, rejected = post(api, event_id, ("nested.zip", hostile.nested_zip(photo)),
                            ("junk.zip", hostile.junk_zip(hostile.noise_jpeg(seed=51))),
                            ("twins.zip", hostile.same_names_zip()),
                            ("corrupt.zip", b"PK\x03\x04" + bytes(range(256)) * 4))
    assert rejected == {"nested.zip/inner.zip": "nested_archive", "junk.zip/race/empty.jpg": "empty_file",
                        "corrupt.zip": "corrupt_archive"}
    # folders, __MACOSX forks and dot-files are skipped silently, as zip tools add them unasked
    assert set(photos) == {"nested.zip/outer.jpg", "junk.zip/race/km10/runner.jpg",
                           "twins.zip/a/IMG_0001.jpg", "twins.zip/b/IMG_0001.jpg"}
    twins = [photos["twins.zip/a/IMG_0001.jpg"], photos["twins.zip/b/IMG_0001.jpg"]]
    assert twins[0]["id"] != twins[1]["id"] and not any(t["duplicate"] for t in twins)
    assert sorted(args[0] for name, args in api.app.state.sender.sent if name == PROCESS_PHOTO) == \
        sorted(p["id"] for p in photos.values())


def test_same_name_different_content_both_become_photos(api, event_id):
    photos_a, _ = post(api, event_id, ("IMG_0001.jpg", hostile.noise_jpeg(seed=60)))
    photos_b, _ = post(api, event_id, ("IMG_0001.jpg", hostile.noise_jpeg(seed=61)))
    assert photos_a["IMG_0001.jpg"]["id"] != photos_b["IMG_0001.jpg"]["id"]
    assert not photos_b["IMG_0001.jpg"]["duplicate"]
    assert api.get(f"/api/v1/events/{event_id}").json()["stats"]["photos"] == 2
