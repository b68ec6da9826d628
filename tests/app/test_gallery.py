"""The runner's gallery behind a signed link: images, zip, "not me", and deleting one's data."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
import zipfile

import httpx
import pytest

from app.services import gallery as gallery_service
from app.services import tokens
from tests.app.test_matching import EVENT_PHOTOS, canvas, identity_image, jpeg, world  # noqa: F401 - fixture
from tests.conftest import REPO, free_port, make_settings, service_env, start_process, wait_for_http, \
    wait_until_processed


@pytest.fixture
def matched(world):
    """Bill matched in a.jpg and c.jpg; d.jpg (strangers only) is nobody's."""
    event = world.event()
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    runner = world.enrol(event["id"], "bill_mcbride")
    token = tokens.make_token(world.settings.signing_key, "gallery", runner["id"])
    return {"world": world, "event": event, "photos": photo_ids, "runner": runner, "token": token}


def get(world, path: str) -> httpx.Response:
    return world.client.get(path, headers={"Authorization": ""})  # pages need no API key


def test_gallery_shows_the_matched_photos_with_downloads(matched):
    world, photos, token = matched["world"], matched["photos"], matched["token"]
    assert matched["runner"]["gallery_url"].endswith(f"/g/{token}")
    page = get(world, f"/g/{token}")
    assert page.status_code == 200 and page.headers["x-robots-tag"].startswith("noindex")
    shown = set(re.findall(r'data-photo-id="([^"]+)"', page.text))
    assert shown == {photos["a.jpg"], photos["c.jpg"]}
    assert f"/g/{token}/photos.zip" in page.text and "/d/" in page.text

    store = world.app.state.store
    original = get(world, f"/g/{token}/photos/{photos['a.jpg']}/original")
    assert original.status_code == 200 and original.content == store.open(_storage_key(world, photos["a.jpg"])).read()
    assert 'filename="a.jpg"' in original.headers["content-disposition"]
    for size in ("thumb", "preview"):
        image = get(world, f"/g/{token}/photos/{photos['c.jpg']}/{size}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:2] == b"\xff\xd8"

    with zipfile.ZipFile(io.BytesIO(get(world, f"/g/{token}/photos.zip").content)) as archive:
        assert sorted(archive.namelist()) == ["a.jpg", "c.jpg"]
        assert archive.read("a.jpg") == original.content


def _storage_key(world, photo_id: str) -> str:
    from app.db import Photo
    from app.db.session import unit_of_work

    with unit_of_work(world.app.state.make_session) as uow:
        return uow.session.get(Photo, photo_id).storage_key


def test_a_link_never_reaches_other_photos(matched):
    world, photos, token = matched["world"], matched["photos"], matched["token"]
    for size in ("thumb", "preview", "original"):
        assert get(world, f"/g/{token}/photos/{photos['d.jpg']}/{size}").status_code == 404
    assert get(world, f"/g/{token}/photos/{photos['a.jpg']}/other").status_code == 404
    delete_token = tokens.make_token(world.settings.signing_key, "delete", matched["runner"]["id"])
    assert get(world, f"/g/{delete_token}").status_code == 404  # a delete link is not a gallery link
    assert get(world, f"/g/{token}x/photos.zip").status_code == 404


def test_not_me_removes_a_photo_for_good(matched):
    world, photos, token = matched["world"], matched["photos"], matched["token"]
    response = world.client.post(f"/g/{token}/photos/{photos['a.jpg']}/not-me", headers={"Authorization": ""},
                                 follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/g/{token}"
    assert photos["a.jpg"] not in get(world, f"/g/{token}").text
    assert get(world, f"/g/{token}/photos/{photos['a.jpg']}/original").status_code == 404
    event_url = f"/api/v1/events/{matched['event']['id']}"
    world.client.patch(event_url, json={"match_threshold": 0.3})  # recomputes everything twice
    world.client.patch(event_url, json={"match_threshold": matched["event"]["match_threshold"]})
    runner_id = matched["runner"]["id"]
    assert [m["photo_id"] for m in world.matches(runner_id)] == [photos["c.jpg"]]


def test_delete_link_confirms_then_erases(matched):
    world, runner = matched["world"], matched["runner"]
    delete_url = gallery_service.delete_url(world.settings, runner["id"])
    path = delete_url.removeprefix(world.settings.public_base_url)
    confirm = get(world, path)
    assert confirm.status_code == 200 and 'id="confirm-delete"' in confirm.text
    assert world.client.get(f"/api/v1/runners/{runner['id']}").status_code == 200  # GET only asks
    done = world.client.post(path, headers={"Authorization": ""})
    assert done.status_code == 200 and "deleted" in done.text
    assert world.client.get(f"/api/v1/runners/{runner['id']}").status_code == 404
    assert get(world, f"/g/{matched['token']}").status_code == 404
    assert world.client.get(f"/api/v1/events/{matched['event']['id']}").json()["stats"]["matches"] == 0


def test_finishline_run_matches_a_new_runner_through_the_worker(tmp_path, faces_dir):
    """The real path: `finishline run` (API + Celery worker), photos first, then the selfie."""
    settings = make_settings(tmp_path / "data")
    env = service_env(settings)
    key = subprocess.run([sys.executable, "-m", "app.cli", "create-key", "t"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    port, log_path = free_port(), tmp_path / "run.log"
    process = start_process(["run", "--port", str(port)], env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", process, log_path)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            event = client.post("/api/v1/events", json={"name": "Real worker"}).json()
            files = [("files", (n, canvas(faces_dir, EVENT_PHOTOS[n]), "image/jpeg")) for n in ("c.jpg", "d.jpg")]
            uploaded = {p["filename"]: p["id"] for p in
                        client.post(f"/api/v1/events/{event['id']}/photos", files=files).json()["photos"]}
            wait_until_processed(client, event["id"], expected=2)
            runner = client.post(f"/api/v1/events/{event['id']}/runners",
                                 data={"name": "M", "email": "m@example.com", "consent": "true"},
                                 files={"selfie": ("s.jpg", jpeg(identity_image(faces_dir, "michael_jackson", 1)))})
            assert runner.status_code == 201, runner.text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                items = client.get(f"/api/v1/runners/{runner.json()['id']}/matches").json()["items"]
                if items:
                    break
                time.sleep(0.3)
            assert [m["photo_id"] for m in items] == [uploaded["c.jpg"]], log_path.read_text()[-3000:]
            gallery = httpx.get(runner.json()["gallery_url"].replace("http://127.0.0.1:8000", base))
            assert uploaded["c.jpg"] in gallery.text and uploaded["d.jpg"] not in gallery.text
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def test_not_me_twice_or_racing_is_no_500(matched, monkeypatch):
    """Review C6: a double submit, and two requests that both passed the match check before either
    took the event lock, each end in the gallery (303), with one rejection."""
    from app.db import Runner
    from app.db.session import unit_of_work
    from app.services import matching

    world, photos, token = matched["world"], matched["photos"], matched["token"]
    url = f"/g/{token}/photos/{photos['a.jpg']}/not-me"
    for _ in range(2):
        response = world.client.post(url, headers={"Authorization": ""}, follow_redirects=False)
        assert response.status_code == 303, response.text

    real_lock = matching.lock_event
    twin_done = []

    def lock_after_the_twin(uow, event_id):
        if not twin_done:  # the twin request takes the lock first, rejects and commits
            twin_done.append(True)
            with unit_of_work(world.app.state.make_session) as twin:
                runner = twin.session.get(Runner, matched["runner"]["id"])
                gallery_service.reject_photo(twin, runner, photos["c.jpg"])
        return real_lock(uow, event_id)

    monkeypatch.setattr(matching, "lock_event", lock_after_the_twin)
    response = world.client.post(f"/g/{token}/photos/{photos['c.jpg']}/not-me", headers={"Authorization": ""},
                                 follow_redirects=False)
    assert response.status_code == 303, response.text
    assert twin_done and world.matches(matched["runner"]["id"]) == []
