"""Secrets and access: hashed API keys, unforgeable links, no file without the right key or
token, no user-supplied path reaching the filesystem, and the public form's limits."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from app.db import Event, Face, Match, Photo, Runner
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.ratelimit import SlidingWindowLimiter
from app.services import api_keys, tokens
from app.storage import LocalPhotoStore, check_key
from tests import hostile
from tests.conftest import api_client, migrated_settings, new_api_key, organisation_for_tests
from tests.images import identity_photo


@pytest.fixture
def secure_settings(tmp_path: Path):
    return migrated_settings(tmp_path / "data", public_rate_limit=3, public_rate_window_s=3600,
                             max_file_bytes=2 * 2**20)


@pytest.fixture
def anon(secure_settings):
    """A client with no API key: what anyone on the internet can do."""
    with api_client(secure_settings, with_key=False) as client:
        yield client


@pytest.fixture
def world(secure_settings):
    """An event with two runners, each matched to one photo whose files are in the store."""
    engine = make_engine(secure_settings.resolved_database_url)
    store = LocalPhotoStore(secure_settings.photos_dir)
    ids: dict[str, str] = {}
    with unit_of_work(make_sessionmaker(engine)) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name="Secure run", slug="secure-run",
                      match_threshold=0.5)
        uow.session.add(event)
        uow.session.flush()
        for who in ("a", "b"):
            photo = Photo(event_id=event.id, filename=f"{who}.jpg", sha256=who * 64, size_bytes=10,
                          content_type="image/jpeg", status="done",
                          storage_key=f"events/{event.id}/originals/{who}.jpg",
                          preview_key=f"events/{event.id}/previews/{who}.jpg",
                          thumb_key=f"events/{event.id}/thumbs/{who}.jpg")
            runner = Runner(event_id=event.id, name=f"Runner {who}", email=f"{who}@example.org")
            uow.session.add_all([photo, runner])
            uow.session.flush()
            face = Face(photo_id=photo.id, event_id=event.id, x1=0, y1=0, x2=10, y2=10, score=0.9, size_px=10,
                        landmarks=[], embedding=b"\0" * 8, model_id="test")
            uow.session.add(face)
            uow.session.flush()
            uow.session.add(Match(event_id=event.id, runner_id=runner.id, photo_id=photo.id, face_id=face.id,
                                  similarity=0.9))
            for key in (photo.storage_key, photo.preview_key, photo.thumb_key):
                store.put_bytes(key, f"SECRET-BYTES-OF-{who}-{key}".encode())
            ids[f"photo_{who}"], ids[f"runner_{who}"] = photo.id, runner.id
        ids["event"] = event.id
    engine.dispose()
    key = secure_settings.signing_key
    for who in ("a", "b"):
        for purpose in ("gallery", "delete", "unsubscribe"):
            ids[f"{purpose}_{who}"] = tokens.make_token(key, purpose, ids[f"runner_{who}"])
    return ids


# --- API keys ---

def test_api_keys_are_stored_hashed_never_in_plaintext(secure_settings):
    key = new_api_key(secure_settings)
    secret = key.split("_", 2)[2]  # fl_<id>_<secret>; the secret itself may contain "_"
    db_file = secure_settings.data_dir / "finishline.db"
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    assert rows and not any(secret in str(value) for row in rows for value in row)
    assert any(hashlib.sha256(secret.encode()).hexdigest() in row for row in rows)
    everything = b"".join(p.read_bytes() for p in secure_settings.data_dir.glob("finishline.db*"))
    assert secret.encode() not in everything and key.encode() not in everything


def test_api_keys_are_compared_in_constant_time(secure_settings, anon, monkeypatch):
    """Every check, of a known or an unknown key id, goes through hmac.compare_digest."""
    calls = []
    real = api_keys.hmac.compare_digest
    monkeypatch.setattr(api_keys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    key = new_api_key(secure_settings)
    key_id = key.split("_")[1]
    for presented in (key, f"fl_{key_id}_wrong", "fl_unknownid_wrong"):
        anon.get("/api/v1/events/x", headers={"Authorization": f"Bearer {presented}"})
    assert len(calls) == 3


# --- nothing without a key ---

def test_runners_photos_and_events_need_an_api_key(anon, world):
    runner, photo, event = world["runner_a"], world["photo_a"], world["event"]
    for method, path in [
        ("GET", f"/api/v1/runners/{runner}"), ("GET", f"/api/v1/runners/{runner}/matches"),
        ("DELETE", f"/api/v1/runners/{runner}"), ("POST", f"/api/v1/runners/{runner}/notify"),
        ("GET", f"/api/v1/events/{event}"), ("GET", f"/api/v1/events/{event}/photos"),
        ("POST", f"/api/v1/events/{event}/photos"), ("POST", f"/api/v1/events/{event}/runners"),
        ("POST", f"/api/v1/events/{event}/notify"), ("GET", f"/api/v1/photos/{photo}"),
    ]:
        response = anon.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["code"] == "unauthorized"
    # and the runner still exists: the DELETE without a key did nothing
    assert anon.get(f"/g/{world['gallery_a']}").status_code == 200


def test_no_file_without_the_right_token(anon, world):
    a, b = world["photo_a"], world["photo_b"]
    ok = anon.get(f"/g/{world['gallery_a']}/photos/{a}/original")
    assert ok.status_code == 200 and ok.content.startswith(b"SECRET-BYTES-OF-a")
    for size in ("thumb", "preview"):
        assert anon.get(f"/g/{world['gallery_a']}/photos/{a}/{size}").status_code == 200
    # runner A's link never reaches runner B's photo, in any size or in the zip
    for size in ("original", "preview", "thumb", "nonsense"):
        denied = anon.get(f"/g/{world['gallery_a']}/photos/{b}/{size}")
        assert denied.status_code == 404 and b"SECRET-BYTES" not in denied.content
    assert b"SECRET-BYTES-OF-b" not in anon.get(f"/g/{world['gallery_a']}/photos.zip").content
    # another purpose's token for the same runner opens nothing
    for wrong in (world["delete_a"], world["unsubscribe_a"]):
        assert anon.get(f"/g/{wrong}/photos/{a}/original").status_code == 404
        assert anon.get(f"/g/{wrong}/photos.zip").status_code == 404


FORGERIES = {
    "random": "eyJhIjoxfQ.abcdefabcdefabcdefabcdefabc",
    "garbage": "not-a-token-at-all",
    "empty-ish": "-",
    "long": "A" * 5000,
    "dots": "..",
    "encoded-slash": "..%2F..%2Fsecret_key",
    "encoded-dots": "%2e%2e",
}


def _tampered(token: str) -> str:
    """One character of the signature changed. Not the last one: in unpadded base64 its low bits
    are unused, so some changes there decode to the very same signature."""
    i = len(token) - 10
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


@pytest.mark.parametrize("route", ["/g/{t}", "/g/{t}/photos.zip", "/g/{t}/photos/{p}/original", "/d/{t}", "/u/{t}"])
def test_forged_and_garbled_tokens_are_404_without_hints(anon, world, secure_settings, route):
    other_key = tokens.make_token("another-secret-key-of-enough-length", "gallery", world["runner_a"])
    bad = {**FORGERIES, "tampered": _tampered(world["gallery_a"]), "other-key": other_key,
           "wrong-purpose": world["unsubscribe_a"] if not route.startswith("/u/") else world["gallery_a"]}
    bodies = set()
    for name, token in bad.items():
        response = anon.get(route.format(t=token, p=world["photo_a"]))
        assert response.status_code == 404, (name, response.status_code, response.text[:200])
        assert b"SECRET-BYTES" not in response.content
        bodies.add(response.content)
    # one and the same answer whatever was wrong: no hint which part of a forgery was right
    assert len(bodies) <= 2, bodies  # (a path that does not even route gets the router's plain 404)
    secret = secure_settings.signing_key.encode()
    assert all(secret not in body for body in bodies)


def test_deleted_runner_link_is_the_same_404(anon, world, secure_settings):
    forged = anon.get(f"/g/{FORGERIES['random']}")
    key = new_api_key(secure_settings)
    assert anon.delete(f"/api/v1/runners/{world['runner_a']}",
                       headers={"Authorization": f"Bearer {key}"}).status_code == 204
    gone = anon.get(f"/g/{world['gallery_a']}")
    assert gone.status_code == 404 and gone.content == forged.content
    assert anon.get(f"/g/{world['gallery_a']}/photos/{world['photo_a']}/original").status_code == 404


def test_state_changing_links_refuse_forgeries(anon, world):
    for path in (f"/d/{_tampered(world['delete_a'])}", f"/u/{_tampered(world['unsubscribe_a'])}",
                 f"/g/{_tampered(world['gallery_a'])}/photos/{world['photo_a']}/not-me",
                 f"/d/{world['gallery_a']}"):  # a gallery link is not a delete link
        assert anon.post(path).status_code == 404, path
    assert anon.get(f"/g/{world['gallery_a']}").status_code == 200  # nothing was deleted


# --- paths from users ---

@pytest.mark.parametrize("key", ["../secret_key", "../../etc/passwd", "/etc/passwd", "a/../../b", "a\\..\\b",
                                 "", ".", "..", "a//b", "a/./b", ".hidden", "a/.."])
def test_check_key_refuses_anything_path_like(key, tmp_path):
    with pytest.raises(ValueError):
        check_key(key)
    store = LocalPhotoStore(tmp_path / "photos")
    (tmp_path / "secret_key").write_text("top secret")
    with pytest.raises(ValueError):
        store.open(key)


@pytest.mark.parametrize("evil", ["..", "..%2F..%2Fsecret_key", "%2e%2e%2f%2e%2e%2fsecret_key", "....//secret_key",
                                  "%00", "x" * 3000])
def test_traversal_in_ids_and_tokens_reaches_no_file(anon, world, secure_settings, evil):
    secret = secure_settings.signing_key.encode()
    headers = {"Authorization": f"Bearer {new_api_key(secure_settings)}"}
    for path in (f"/api/v1/photos/{evil}", f"/api/v1/events/{evil}", f"/api/v1/events/{evil}/photos",
                 f"/api/v1/runners/{evil}", f"/api/v1/runners/{evil}/matches", f"/e/{evil}",
                 f"/g/{world['gallery_a']}/photos/{evil}/original", f"/g/{world['gallery_a']}/photos/{world['photo_a']}/{evil}",
                 f"/g/{evil}", f"/d/{evil}", f"/u/{evil}"):
        response = anon.get(path, headers=headers)
        assert response.status_code in (404, 405, 422), (path, response.status_code)
        assert secret not in response.content and b"SECRET-BYTES" not in response.content and b"root:" not in response.content


# --- the public selfie form ---

def _post_form(anon, slug="secure-run", **fields):
    data = {"name": "Ann Runner", "email": "ann@example.org", "consent": "true", **fields}
    selfie = fields.pop("selfie", b"not a photo")
    data.pop("selfie", None)
    return anon.post(f"/e/{slug}", data=data, files={"selfie": ("me.jpg", selfie, "image/jpeg")})


@pytest.mark.parametrize("fields", [
    {"email": "not-an-address"}, {"email": "a@b@c"}, {"email": "x" * 400 + "@example.org"},
    {"name": "N" * 201}, {"name": "   "}, {"bib": "9" * 41},
])
def test_selfie_form_validates_fields(anon, world, fields):
    response = _post_form(anon, **fields)
    assert response.status_code == 400 and "text/html" in response.headers["content-type"]
    assert "Please check" in response.text


def test_selfie_form_refuses_bombs_and_non_images(anon, world):
    bomb = _post_form(anon, selfie=hostile.png_decompression_bomb())
    assert bomb.status_code == 413 and "too large" in bomb.text
    fake = _post_form(anon, selfie=hostile.not_an_image("html"))
    assert fake.status_code == 422 and "not a photo" in fake.text and "<script>alert" not in fake.text


def test_selfie_form_limits_size_and_rate(anon, world, secure_settings, faces_dir):
    before = {p for p in secure_settings.photos_dir.rglob("*") if p.is_file()}
    selfie = (identity_photo(faces_dir, "andy_roddick", 1)).read_bytes()
    enrolled = _post_form(anon, selfie=selfie)
    assert enrolled.status_code == 200, enrolled.text[:500]
    # the selfie is analysed in memory and never stored, so no route can ever serve it
    assert {p for p in secure_settings.photos_dir.rglob("*") if p.is_file()} == before

    too_big = _post_form(anon, selfie=b"\xff\xd8\xff" + bytes(secure_settings.max_file_bytes))
    assert too_big.status_code == 413
    # a body far past one photo is refused before it is read at all
    huge = anon.post("/e/secure-run", content=b"x" * 100,
                     headers={"Content-Length": str(secure_settings.max_file_bytes + 2 * 2**20),
                              "Content-Type": "multipart/form-data; boundary=x"})
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"

    # the refused-before-reading body did not count; one more makes three (the limit per address)
    assert _post_form(anon, email="bad").status_code == 400
    limited = _post_form(anon, selfie=selfie)
    assert limited.status_code == 429 and "text/html" in limited.headers["content-type"]
    assert "try again" in limited.text
    assert anon.get("/e/secure-run").status_code == 200  # reading the form is not limited


def test_sliding_window_limiter_per_address():
    now = [1000.0]
    limiter = SlidingWindowLimiter(limit=2, window_s=60, max_clients=3, clock=lambda: now[0])
    assert limiter.hit("1.1.1.1") == 0 and limiter.hit("1.1.1.1") == 0
    assert limiter.hit("1.1.1.1") == pytest.approx(60)  # third within the window: wait a minute
    assert limiter.hit("2.2.2.2") == 0  # another address has its own allowance
    now[0] += 30
    assert limiter.hit("1.1.1.1") == pytest.approx(30)  # refused hits do not extend the wait
    now[0] += 30.001
    assert limiter.hit("1.1.1.1") == 0  # the window slid past the first two
    for n in range(10):  # a flood of addresses: memory stays bounded
        limiter.hit(f"10.0.0.{n}")
    assert len(limiter._hits) == 3
