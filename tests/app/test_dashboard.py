"""The dashboard over HTTP: sign-in, sessions, CSRF, events, resumable uploads, runners, sending."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import pytest
from fastapi.testclient import TestClient

from app.browser_policy import EMAIL_SAMPLE_POLICY
from app.main import create_app
from tests.app.dashboard_helpers import PASSWORD, add_match, csrf_of, new_user, sign_in
from tests.conftest import RecordingSender, migrated_settings
from tests.images import noise_jpeg
from tests.multipart_body import CONTENT_TYPE, end, field_part, part
from worker.dispatch import ASSEMBLE_UPLOAD, PROCESS_PHOTO, SWEEP_STALE_WORK


@pytest.fixture
def app(tmp_path):
    settings = migrated_settings(tmp_path / "data", upload_chunk_bytes=64 * 1024)
    application = create_app(settings)
    application.state.sender = RecordingSender()
    return application


@pytest.fixture
def run_task(app, monkeypatch):
    """`run_task(NAME, *args)`: the real task, run by Celery in this process (eager) with a worker
    context for the app's settings; what it queues goes to the embedded broker's folder."""
    import worker.tasks  # noqa: F401 (registers the tasks)
    from worker import context
    from worker.celery_app import create_worker_app

    monkeypatch.setattr(context, "_context", None)
    celery = create_worker_app(app.state.settings)
    yield lambda name, *args: celery.tasks[name].apply(args=list(args)).get()
    if context._context is not None:
        context._context.make_session.kw["bind"].dispose()


@pytest.fixture
def browser(app):
    """An anonymous client (no API key): the dashboard is for people with a session cookie."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def signed_in(app, browser):
    email = new_user(app.state.settings)
    assert sign_in(browser, email).status_code == 303
    return browser


def new_event(client, name: str = "City Marathon", **fields) -> str:
    page = client.get("/dashboard")
    answer = client.post("/dashboard/events", data={"csrf_token": csrf_of(page.text), "name": name, **fields},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"].split("/")[3].split("?")[0]


def test_the_dashboard_needs_a_session_and_signs_in_and_out(app, browser):
    assert browser.get("/dashboard", follow_redirects=False).headers["location"] == "/login?next=/dashboard"
    email = new_user(app.state.settings)
    wrong = sign_in(browser, email, "not the password")
    assert wrong.status_code == 401 and "Wrong e-mail address or password" in wrong.text
    answer = sign_in(browser, email, next_path="/dashboard")
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    assert "fl_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = browser.get("/dashboard")
    assert page.status_code == 200 and 'id="sign-out"' in page.text
    stolen = browser.cookies.get("fl_session")
    assert browser.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False).status_code == 303
    # signing out ends the session on the server: a copied cookie no longer works
    with TestClient(app, cookies={"fl_session": stolen}) as thief:
        assert thief.get("/dashboard", follow_redirects=False).status_code == 303


def test_sign_in_refuses_a_foreign_form_an_open_redirect_and_too_many_tries(app, browser):
    email = new_user(app.state.settings)
    browser.get("/login")
    forged = browser.post("/login", data={"email": email, "password": PASSWORD, "login_token": "guess"})
    assert forged.status_code == 403
    assert sign_in(browser, email, next_path="https://evil.example/").headers["location"] == "/dashboard"
    browser.cookies.clear()
    codes = [sign_in(browser, email, "wrong").status_code for _ in range(9)]  # 10 tries with the one above
    assert codes == [401] * 9
    limited = sign_in(browser, email)  # even the right password waits now
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_every_form_post_needs_the_csrf_token(signed_in):
    assert signed_in.post("/dashboard/events", data={"name": "X"}).status_code == 403
    assert signed_in.post("/dashboard/events", data={"name": "X", "csrf_token": "0" * 64}).status_code == 403
    assert signed_in.post("/logout", follow_redirects=False).status_code == 403


def test_events_list_links_each_event_by_name_and_another_organisation_sees_none(app, signed_in):
    event_id = new_event(signed_in, "Harbour 10k", starts_on="2026-05-03", match_threshold="0.5")
    page = signed_in.get("/dashboard").text
    assert f'<a class="event-link" href="/dashboard/events/{event_id}">Harbour 10k</a>' in page
    assert 'name="name"' in page and 'name="match_threshold"' in page
    event_page = signed_in.get(f"/dashboard/events/{event_id}").text
    assert re.search(r'<input type="file" id="files" name="files" multiple', event_page)
    for field in ("photos", "photos_pending", "photos_processing", "photos_done", "photos_failed", "faces",
                  "runners", "matches"):
        assert f'data-stat="{field}"' in event_page
    assert "<progress" in event_page
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos"] == 0

    other_email = new_user(app.state.settings, "other@example.com", org="other")
    with TestClient(app) as other:
        sign_in(other, other_email)
        assert "Harbour 10k" not in other.get("/dashboard").text
        assert other.get(f"/dashboard/events/{event_id}").status_code == 404
        assert other.get(f"/dashboard/events/{event_id}/stats").status_code == 404


def test_a_resumable_upload_survives_lost_pieces_and_goes_through_the_uploader(app, signed_in, run_task):
    event_id = new_event(signed_in)
    csrf = csrf_of(signed_in.get(f"/dashboard/events/{event_id}").text)
    headers = {"X-CSRF-Token": csrf}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"km{i}/photo{i}.jpg", noise_jpeg(seed=i, size=(400, 300)))
        zf.writestr("notes.txt", b"not a photo")
    data = archive.getvalue()
    base = f"/dashboard/events/{event_id}/uploads"
    assert signed_in.post(base, json={"filename": "cam.zip", "size": len(data)}).status_code == 403  # no CSRF
    started = signed_in.post(base, json={"filename": "cam.zip", "size": len(data)}, headers=headers).json()
    chunk = started["chunk_bytes"]
    assert started["offset"] == 0 and chunk == 64 * 1024
    url = f"{base}/{started['id']}"
    first = signed_in.put(f"{url}?offset=0", content=data[:chunk], headers=headers).json()
    assert first["offset"] == chunk
    # the reply was lost: the client sends the same piece again and is told where to carry on
    again = signed_in.put(f"{url}?offset=0", content=data[:chunk], headers=headers)
    assert again.status_code == 409 and again.json()["offset"] == chunk
    # a new tab asks where it stopped, then sends the rest
    offset = signed_in.get(url).json()["offset"]
    while offset < len(data):
        offset = signed_in.put(f"{url}?offset={offset}", content=data[offset:offset + chunk],
                               headers=headers).json()["offset"]
    # the API only records `assembling` and queues the worker's task: no zip is expanded here
    assert signed_in.get(url).json()["status"] == "assembling"
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos"] == 0
    assert app.state.sender.sent == [(ASSEMBLE_UPLOAD, (started["id"], event_id))]  # once, however often polled

    assert run_task(ASSEMBLE_UPLOAD, started["id"], event_id) == 3
    state = signed_in.get(url).json()
    assert state["status"] == "done", state
    assert sorted(p["filename"] for p in state["result"]["photos"]) == [
        "cam.zip/km0/photo0.jpg", "cam.zip/km1/photo1.jpg", "cam.zip/km2/photo2.jpg"]
    assert [r["code"] for r in state["result"]["rejected"]] == ["unsupported_type"]
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos"] == 3
    assert "notes.txt" in signed_in.get(f"/dashboard/events/{event_id}").text  # refused files are listed
    assert not app.state.store.exists(f"events/{event_id}/uploads/{started['id']}/{0:015d}")  # pieces dropped
    assert signed_in.put(f"{url}?offset=0", content=b"x", headers=headers).status_code == 409
    # a redelivered message finds the work done and leaves the report alone
    assert run_task(ASSEMBLE_UPLOAD, started["id"], event_id) == 0
    assert signed_in.get(url).json()["result"] == state["result"]


def _uploaded(client, event_id: str, data: bytes, filename: str = "cam.jpg") -> str:
    """An upload sent whole in one piece (so `assembling`); its id."""
    headers = {"X-CSRF-Token": csrf_of(client.get(f"/dashboard/events/{event_id}").text)}
    base = f"/dashboard/events/{event_id}/uploads"
    started = client.post(base, json={"filename": filename, "size": len(data)}, headers=headers).json()
    state = client.put(f"{base}/{started['id']}?offset=0", content=data, headers=headers).json()
    assert state["status"] == "assembling"
    return started["id"]


def _age(app, upload_id: str, by) -> None:
    from app.db import UploadSession, utcnow
    from app.db.session import unit_of_work

    with unit_of_work(app.state.make_session) as uow:
        uow.session.get(UploadSession, upload_id).updated_at = utcnow() - by


def _queued(app, queue: str) -> list[tuple[str, list]]:
    """(task, args) of the messages waiting in one queue of the embedded broker's folder."""
    import base64
    import json

    messages = [json.loads(p.read_text()) for p in sorted((app.state.settings.broker_dir / "queue").iterdir())
                if p.name.endswith(f".{queue}.msg")]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


def test_an_upload_stuck_assembling_is_queued_again_by_the_sweeper(app, signed_in, run_task):
    from datetime import timedelta

    from app.services.chunked_uploads import STALE_FINISH

    event_id = new_event(signed_in)
    stuck = _uploaded(signed_in, event_id, noise_jpeg(seed=7))
    fresh = _uploaded(signed_in, event_id, noise_jpeg(seed=8))
    _age(app, stuck, STALE_FINISH + timedelta(minutes=1))  # its worker died (or the message was lost)
    _age(app, fresh, STALE_FINISH - timedelta(minutes=1))  # a long assembly, still running
    assert _queued(app, "uploads") == []
    run_task(SWEEP_STALE_WORK)
    assert _queued(app, "uploads") == [(ASSEMBLE_UPLOAD, [stuck, event_id])]
    run_task(SWEEP_STALE_WORK)  # claimed again just now: not queued twice
    assert len(_queued(app, "uploads")) == 1
    run_task(ASSEMBLE_UPLOAD, stuck, event_id)
    state = signed_in.get(f"/dashboard/events/{event_id}/uploads/{stuck}").json()
    assert state["status"] == "done" and len(state["result"]["photos"]) == 1


def test_a_long_assembly_keeps_itself_from_looking_stale(app, signed_in, monkeypatch):
    """However long a 10 GB zip takes, the sweeper never queues a second assembly beside it."""
    from datetime import timedelta

    from app.db.session import unit_of_work
    from app.services import chunked_uploads
    from worker.tasks import run_assembly

    event_id = new_event(signed_in)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.jpg", noise_jpeg(seed=20 + i))
    upload_id = _uploaded(signed_in, event_id, archive.getvalue(), "big.zip")
    _age(app, upload_id, chunked_uploads.STALE_FINISH + timedelta(minutes=1))  # as if it had run that long
    monkeypatch.setattr(chunked_uploads, "HEARTBEAT", timedelta(0))
    swept = []

    class SweepingSender(RecordingSender):
        def send(self, task_name: str, *args: object) -> None:  # between two photos of the zip
            super().send(task_name, *args)
            with unit_of_work(app.state.make_session, RecordingSender()) as uow:
                swept.append(chunked_uploads.sweep_stale_assemblies(uow))

    settings = app.state.settings
    report = run_assembly(settings, app.state.make_session, app.state.store, SweepingSender(), upload_id, event_id)
    assert len(report["photos"]) == 3 and swept and not any(swept), swept


def test_upload_without_script_and_failed_photo_retry(app, signed_in):
    from app.db import Photo
    from app.db.session import unit_of_work

    event_id = new_event(signed_in)
    csrf = csrf_of(signed_in.get(f"/dashboard/events/{event_id}").text)
    files = [("files", ("a.jpg", noise_jpeg(seed=5), "image/jpeg")), ("files", ("b.gif", b"GIF89a", "image/gif"))]
    answer = signed_in.post(f"/dashboard/events/{event_id}/photos", data={"csrf_token": csrf}, files=files)
    assert answer.status_code == 200 and "b.gif" in answer.text
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos"] == 1
    with unit_of_work(app.state.make_session) as uow:
        photo = uow.session.query(Photo).one()
        photo.status, photo.error = "failed", "decoder ran out of memory"
        photo_id = photo.id
    page = signed_in.get(f"/dashboard/events/{event_id}").text
    assert "decoder ran out of memory" in page
    signed_in.post(f"/dashboard/events/{event_id}/photos/{photo_id}/retry", data={"csrf_token": csrf})
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos_pending"] == 1
    assert app.state.sender.sent[-1] == (PROCESS_PHOTO, (photo_id,))


def test_upload_without_script_streams_the_body_and_checks_the_form_token_before_any_file(app, signed_in,
                                                                                          monkeypatch):
    """Review S9: the form is not spooled to the system temp dir by `request.form()` first; the
    files go straight into the data dir's staging. The token (the form's first field) is checked
    before a file is written: a forged or late token stores nothing."""
    from starlette.requests import Request

    event_id = new_event(signed_in)
    csrf = csrf_of(signed_in.get(f"/dashboard/events/{event_id}").text)

    async def no_spooling(self, **_):
        raise AssertionError("request.form() spools the whole upload before the handler sees it")

    monkeypatch.setattr(Request, "form", no_spooling)
    staging = app.state.settings.data_dir / "tmp"
    photo = ("files", ("a.jpg", noise_jpeg(seed=6), "image/jpeg"))
    forged = signed_in.post(f"/dashboard/events/{event_id}/photos", data={"csrf_token": "x" * len(csrf)},
                            files=[photo])
    assert forged.status_code == 403 and forged.json()["code"] == "csrf_failed"
    # the token after the files (no browser sends it so; a forger might): refused at the first file
    late = part("a.jpg", noise_jpeg(seed=7)) + field_part("csrf_token", csrf) + end()
    answer = signed_in.post(f"/dashboard/events/{event_id}/photos", content=late,
                            headers={"Content-Type": CONTENT_TYPE})
    assert answer.status_code == 403 and answer.json()["code"] == "csrf_failed"
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos"] == 0
    assert not (staging.exists() and any(staging.iterdir()))

    answer = signed_in.post(f"/dashboard/events/{event_id}/photos", data={"csrf_token": csrf}, files=[photo])
    assert answer.status_code == 200
    assert signed_in.get(f"/dashboard/events/{event_id}/stats").json()["photos"] == 1
    assert not any(staging.iterdir())


def test_settings_change_the_runner_pages(signed_in, tmp_path):
    from PIL import Image

    event_id = new_event(signed_in, "Lakeside Run")
    page = signed_in.get(f"/dashboard/events/{event_id}/settings").text
    logo = io.BytesIO()
    Image.new("RGB", (800, 400), (250, 200, 0)).save(logo, "PNG")
    answer = signed_in.post(f"/dashboard/events/{event_id}/settings", data={
        "csrf_token": csrf_of(page), "name": "Lakeside Run 2026", "starts_on": "2026-09-13", "match_threshold": "0.5",
        "brand_colour": "#ffd000", "privacy_controller": "Lakeside Events Ltd, privacy@lakeside.example",
        "privacy_retention": "until 31 December 2026"}, files={"logo": ("logo.png", logo.getvalue(), "image/png")},
        follow_redirects=False)
    assert answer.status_code == 303, answer.text
    slug = re.search(r'href="/e/([^"]+)">Selfie page', signed_in.get(f"/dashboard/events/{event_id}").text).group(1)
    selfie = signed_in.get(f"/e/{slug}").text
    assert "Lakeside Run 2026" in selfie and "Sunday 13 September 2026" in selfie
    assert "Lakeside Events Ltd, privacy@lakeside.example" in selfie and "until 31 December 2026" in selfie
    css = signed_in.get(f"/e/{slug}/brand.css").text
    assert "--accent:#ffd000" in css and "--on-accent:#000000" in css  # yellow takes black text
    assert signed_in.get(f"/e/{slug}/logo").headers["content-type"] == "image/png"
    bad = signed_in.post(f"/dashboard/events/{event_id}/settings", data={
        "csrf_token": csrf_of(page), "name": "Lakeside Run 2026", "brand_colour": "red"})
    assert bad.status_code == 422 and "#1a2b3c" in bad.text


def test_runners_search_csv_and_sending_page(app, signed_in):
    from app.db import Runner
    from app.db.session import unit_of_work

    event_id = new_event(signed_in, "Bay Run")
    with unit_of_work(app.state.make_session) as uow:
        for name, email, bib in (("Ada Lovelace", "ada@example.com", "101"), ("=HYPERLINK(1)", "eve@example.com", None)):
            uow.session.add(Runner(event_id=event_id, name=name, email=email, bib=bib))
    by_bib = signed_in.get(f"/dashboard/events/{event_id}/runners?q=101").text
    assert "Ada Lovelace" in by_bib and "eve@example.com" not in by_bib
    assert "eve@example.com" in signed_in.get(f"/dashboard/events/{event_id}/runners?q=EVE").text
    rows = list(csv.DictReader(io.StringIO(signed_in.get(f"/dashboard/events/{event_id}/runners.csv").text)))
    assert {r["name"] for r in rows} == {"Ada Lovelace", "'=HYPERLINK(1)"}  # no formula injection
    assert all(r["photos"] == "0" and "/g/" in r["gallery_url"] for r in rows)
    send = signed_in.get(f"/dashboard/events/{event_id}/send").text
    assert "Nothing to send" in send and "<svg" in send and "/e/" in send
    svg = signed_in.get(f"/dashboard/events/{event_id}/qr.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content


def test_deleting_an_event_removes_unfinished_uploads_too(app, signed_in):
    event_id = new_event(signed_in, "Gone Run")
    csrf = csrf_of(signed_in.get(f"/dashboard/events/{event_id}").text)
    base = f"/dashboard/events/{event_id}/uploads"
    started = signed_in.post(base, json={"filename": "big.zip", "size": 10 * 2**20},
                             headers={"X-CSRF-Token": csrf}).json()
    signed_in.put(f"{base}/{started['id']}?offset=0", content=b"x" * 1000, headers={"X-CSRF-Token": csrf})
    store = app.state.store
    piece = f"events/{event_id}/uploads/{started['id']}/{0:015d}"
    assert store.exists(piece)
    answer = signed_in.post(f"/dashboard/events/{event_id}/delete", data={"csrf_token": csrf})
    assert answer.status_code == 200 and "Event deleted" in answer.text and "Gone Run" not in answer.text
    assert not store.exists(piece)
    assert signed_in.get(f"/dashboard/events/{event_id}").status_code == 404


def test_brand_colours_always_keep_readable_contrast():
    from app.services.branding import contrast, palette

    for colour in ("#ffd000", "#00ff00", "#ffffff", "#000000", "#0b5fff", "#e11d48", "#7dd3fc", "#2f9e8f",
                   "#ff5500", None, "bogus"):
        p = palette(colour)
        assert contrast(p.accent, p.on_accent) >= 4.5, (colour, p)
        assert contrast(p.accent_text, "#ffffff") >= 4.5, (colour, p)
    assert palette("#ffd000").accent == "#ffd000"  # a colour that reads well is kept as chosen


def test_sending_previews_the_count_and_a_sample_then_queues(app, signed_in):
    from app.db import Photo, Runner
    from app.db.session import unit_of_work
    from worker.dispatch import SEND_RUNNER_EMAIL

    event_id = new_event(signed_in, "Bay Run")
    with unit_of_work(app.state.make_session) as uow:
        for i, name in enumerate(("Ada Lovelace", "Grace Hopper")):
            runner = Runner(event_id=event_id, name=name, email=f"r{i}@example.com")
            thumb = f"events/{event_id}/thumbs/{i}.jpg"
            app.state.store.put_bytes(thumb, noise_jpeg(seed=i))
            photo = Photo(event_id=event_id, filename=f"{i}.jpg", sha256=f"{i:064d}", size_bytes=1,
                          content_type="image/jpeg", storage_key=f"events/{event_id}/originals/{i}.jpg",
                          status="done", thumb_key=thumb)
            uow.session.add_all([runner, photo])
            uow.session.flush()
            add_match(uow, event_id, runner.id, photo.id)
    page = signed_in.get(f"/dashboard/events/{event_id}/send").text
    assert "2 e-mails" in page and 'id="email-sample"' in page
    assert re.search(r"1 new photo of you from Bay Run", page) and "/g/" in page  # the rendered message
    frame = re.search(r'<iframe [^>]*src="([^"]+)" sandbox="allow-popups allow-popups-to-escape-sandbox"', page)
    sample = signed_in.get(frame.group(1).replace("&amp;", "&"))
    assert sample.status_code == 200, sample.text
    assert sample.headers["content-security-policy"] == EMAIL_SAMPLE_POLICY
    assert "script-src" not in EMAIL_SAMPLE_POLICY and "'unsafe-inline'" in EMAIL_SAMPLE_POLICY
    assert sample.headers["x-frame-options"] == "SAMEORIGIN" and "no-store" in sample.headers["cache-control"]
    assert "<script" not in sample.text and 'style="' in sample.text and "/g/" in sample.text
    assert re.search(r"Hi (Ada|Grace),", sample.text)
    assert re.search(r'<img src="data:image/jpeg;base64,[^"]+" alt="Photo 1"', sample.text)  # its thumbnail
    signed_in.post(f"/dashboard/events/{event_id}/send", data={"csrf_token": csrf_of(page)})
    assert [name for name, _ in app.state.sender.sent].count(SEND_RUNNER_EMAIL) == 2
    assert "Nothing to send" in signed_in.get(f"/dashboard/events/{event_id}/send").text


def test_the_email_sample_shows_only_a_runner_of_that_event_to_its_organisation(app, signed_in):
    from app.db import Runner
    from app.db.session import unit_of_work

    event_id, elsewhere = new_event(signed_in, "Bay Run"), new_event(signed_in, "Hill Run")
    with unit_of_work(app.state.make_session) as uow:
        ours, theirs = Runner(event_id=event_id, name="Ada", email="a@example.com"), Runner(
            event_id=elsewhere, name="Bo", email="b@example.com")
        uow.session.add_all([ours, theirs])
    url = f"/dashboard/events/{event_id}/send/sample.html?runner="
    assert "Hi Ada," in signed_in.get(url + ours.id).text  # a reminder: no new photos, none at all
    assert signed_in.get(url + theirs.id).status_code == 404  # a runner of another event
    assert signed_in.get(url + "0" * 26).status_code == 404
    assert signed_in.get(url).status_code == 404
    other_email = new_user(app.state.settings, "other@example.com", org="other")
    with TestClient(app) as other:
        assert other.get(url + ours.id, follow_redirects=False).status_code == 303  # to sign in
        sign_in(other, other_email)
        assert other.get(url + ours.id).status_code == 404


def test_uploads_abandoned_for_a_week_are_dropped_with_their_pieces(app, signed_in):
    from datetime import timedelta

    from app.db import UploadSession, utcnow
    from app.db.session import unit_of_work
    from app.services import chunked_uploads

    event_id = new_event(signed_in)
    csrf = csrf_of(signed_in.get(f"/dashboard/events/{event_id}").text)
    base = f"/dashboard/events/{event_id}/uploads"
    ids = []
    for name in ("old.zip", "recent.zip"):
        started = signed_in.post(base, json={"filename": name, "size": 5000}, headers={"X-CSRF-Token": csrf}).json()
        signed_in.put(f"{base}/{started['id']}?offset=0", content=b"y" * 100, headers={"X-CSRF-Token": csrf})
        ids.append(started["id"])
    with unit_of_work(app.state.make_session) as uow:
        uow.session.get(UploadSession, ids[0]).updated_at = utcnow() - timedelta(days=8)
    with unit_of_work(app.state.make_session) as uow:
        assert chunked_uploads.expire_abandoned(uow, app.state.store) == 1
    assert signed_in.get(f"{base}/{ids[0]}").status_code == 404
    assert signed_in.get(f"{base}/{ids[1]}").json()["offset"] == 100
    assert not app.state.store.exists(f"events/{event_id}/uploads/{ids[0]}/{0:015d}")


def test_resend_and_delete_a_runner_from_the_runners_page(app, signed_in):
    from app.db import Runner
    from app.db.session import unit_of_work

    event_id = new_event(signed_in, "Resend Run")
    with unit_of_work(app.state.make_session) as uow:
        runner = Runner(event_id=event_id, name="Ada Lovelace", email="ada@example.com")
        uow.session.add(runner)
        uow.session.flush()
        runner_id = runner.id
    page = signed_in.get(f"/dashboard/events/{event_id}/runners").text
    assert f"/dashboard/events/{event_id}/runners/{runner_id}/notify" in page
    resent = signed_in.post(f"/dashboard/events/{event_id}/runners/{runner_id}/notify", data={"csrf_token": csrf_of(page)})
    assert resent.status_code == 200 and "Nothing new to e-mail" in resent.text  # no photos of her yet
    other_event = new_event(signed_in, "Other Run")  # a runner is reached only through its own event
    assert signed_in.post(f"/dashboard/events/{other_event}/runners/{runner_id}/delete",
                          data={"csrf_token": csrf_of(page)}).status_code == 404
    deleted = signed_in.post(f"/dashboard/events/{event_id}/runners/{runner_id}/delete", data={"csrf_token": csrf_of(page)})
    assert deleted.status_code == 200 and "Runner deleted" in deleted.text and "ada@example.com" not in deleted.text


def test_a_start_list_is_imported_from_the_runners_page(signed_in):
    event_id = new_event(signed_in)
    page = signed_in.get(f"/dashboard/events/{event_id}/runners").text
    assert 'id="start-list-form"' in page
    csv_file = b"bib,name,email\n101,Ada Runner,ada@example.org\n12a,Bad Bib,bad@example.org\n102,Bo,\n"
    answer = signed_in.post(f"/dashboard/events/{event_id}/start-list", data={"csrf_token": csrf_of(page)},
                            files={"file": ("start.csv", csv_file, "text/csv")})
    assert answer.status_code == 200
    text = " ".join(answer.text.split())
    assert "Start list imported: 2 new, 0 updated" in text and "Line 3:" in text
    assert "Ada Runner" in text and "Bo" in text and "Bad Bib" not in text.split("not imported")[0]
    # a file that is not a start list is refused whole, and says why
    broken = signed_in.post(f"/dashboard/events/{event_id}/start-list", data={"csrf_token": csrf_of(page)},
                            files={"file": ("start.csv", b"name,email\nAda,ada@example.org\n", "text/csv")})
    assert broken.status_code == 422 and 'id="import-error"' in broken.text
    without_token = signed_in.post(f"/dashboard/events/{event_id}/start-list",
                                   files={"file": ("start.csv", csv_file, "text/csv")})
    assert without_token.status_code == 403


def test_an_upload_finished_while_the_broker_is_down_is_queued_when_it_is_back(app, signed_in, monkeypatch):
    """The assembly is claimed only while the broker answers: with it down the upload stays
    `complete` (the page keeps polling) instead of `assembling` with a lost message, which only
    the sweeper would find, 15 minutes later."""
    from kombu.exceptions import OperationalError as BrokerError

    from app.pages.dashboard import uploads as upload_routes

    def broker_down(celery) -> None:  # type: ignore[no-untyped-def]
        raise BrokerError("connection refused")

    monkeypatch.setattr(upload_routes, "check_broker", broker_down)
    event_id = new_event(signed_in)
    data = noise_jpeg(seed=3, size=(400, 300))
    headers = {"X-CSRF-Token": csrf_of(signed_in.get(f"/dashboard/events/{event_id}").text)}
    base = f"/dashboard/events/{event_id}/uploads"
    upload_id = signed_in.post(base, json={"filename": "cam.jpg", "size": len(data)}, headers=headers).json()["id"]
    url = f"{base}/{upload_id}"
    assert signed_in.put(f"{url}?offset=0", content=data, headers=headers).json()["status"] == "complete"
    assert signed_in.get(url).json()["status"] == "complete"
    assert [name for name, _ in app.state.sender.sent] == []
    monkeypatch.setattr(upload_routes, "check_broker", lambda celery: None)  # back
    assert signed_in.get(url).json()["status"] == "assembling"
    assert app.state.sender.sent == [(ASSEMBLE_UPLOAD, (upload_id, event_id))]


def test_an_upload_whose_piece_is_gone_from_the_store_fails_with_a_reason(app, signed_in, run_task):
    """No retry brings a lost piece back: the upload ends `failed` with what to do, instead of
    `assembling` for ever (re-queued by the sweeper every STALE_FINISH, the page polling)."""
    event_id = new_event(signed_in)
    upload_id = _uploaded(signed_in, event_id, noise_jpeg(seed=9, size=(400, 300)))
    app.state.store.delete(f"events/{event_id}/uploads/{upload_id}/{0:015d}")
    run_task(ASSEMBLE_UPLOAD, upload_id, event_id)
    state = signed_in.get(f"/dashboard/events/{event_id}/uploads/{upload_id}").json()
    assert state["status"] == "failed", state
    assert "upload the file again" in state["result"]["error"] and state["result"]["photos"] == []
    assert app.state.sender.sent.count((ASSEMBLE_UPLOAD, (upload_id, event_id))) == 1  # not queued again


def test_an_assembled_zip_listing_too_many_entries_is_refused_unopened(app, signed_in):
    """The worker's assembly shares the Uploader: the zip's end record refuses it before zipfile
    would read its whole central directory into memory."""
    from tests import hostile
    from worker.tasks import run_assembly

    settings = app.state.settings.model_copy(update={"max_archive_entries": 10})
    event_id = new_event(signed_in)
    upload_id = _uploaded(signed_in, event_id, hostile.many_entries_zip(2000), "tiny-files.zip")
    report = run_assembly(settings, app.state.make_session, app.state.store, RecordingSender(), upload_id, event_id)
    assert report["photos"] == []
    assert [(r["filename"], r["code"]) for r in report["rejected"]] == [("tiny-files.zip", "archive_too_many_files")]
    assert signed_in.get(f"/dashboard/events/{event_id}/uploads/{upload_id}").json()["status"] == "done"


class _UnreadableStore:
    """The app's photo store, except that reading a file back always fails (credentials revoked,
    a bucket gone): no retry helps, yet it is no missing piece either."""

    def __init__(self, store, error: BaseException) -> None:
        self._store, self._error = store, error

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def open(self, key: str):
        raise self._error


def _assemble_until_settled(app, signed_in, store, upload_id: str, event_id: str) -> list[str]:
    """Run the assembly as the worker would, each time the sweeper queues it again; the upload's
    status after each try. Stops once it is no longer `assembling` (or after far too many tries)."""
    from datetime import timedelta

    from app.db.session import unit_of_work
    from app.services import chunked_uploads
    from worker.tasks import run_assembly

    statuses = []
    for _ in range(10):
        try:
            run_assembly(app.state.settings, app.state.make_session, store, RecordingSender(), upload_id, event_id)
        except _WorkerDied:
            pass
        statuses.append(signed_in.get(f"/dashboard/events/{event_id}/uploads/{upload_id}").json()["status"])
        if statuses[-1] != "assembling":
            break
        _age(app, upload_id, chunked_uploads.STALE_FINISH + timedelta(minutes=1))
        with unit_of_work(app.state.make_session, RecordingSender()) as uow:
            assert chunked_uploads.sweep_stale_assemblies(uow) == [upload_id]
    return statuses


class _WorkerDied(BaseException):
    """Stands in for the worker process dying mid-assembly (nothing after it runs)."""


@pytest.mark.parametrize("error", [OSError("the store is unreachable"), _WorkerDied()], ids=["store-raises", "worker-dies"])
def test_an_upload_whose_store_keeps_failing_ends_failed_after_its_attempts(app, signed_in, error):
    """Not `assembling` for ever (the task retried, then the sweeper queued it again every
    STALE_FINISH): after MAX_ASSEMBLY_ATTEMPTS tries it is `failed` with what to do."""
    from datetime import timedelta

    from app.db.session import unit_of_work
    from app.services.chunked_uploads import MAX_ASSEMBLY_ATTEMPTS, STALE_FINISH, sweep_stale_assemblies

    event_id = new_event(signed_in)
    upload_id = _uploaded(signed_in, event_id, noise_jpeg(seed=12, size=(400, 300)))
    store = _UnreadableStore(app.state.store, error)
    statuses = _assemble_until_settled(app, signed_in, store, upload_id, event_id)
    tries = MAX_ASSEMBLY_ATTEMPTS if isinstance(error, OSError) else MAX_ASSEMBLY_ATTEMPTS + 1
    assert statuses == ["assembling"] * (tries - 1) + ["failed"]
    state = signed_in.get(f"/dashboard/events/{event_id}/uploads/{upload_id}").json()
    assert "upload the file again" in state["result"]["error"] and state["result"]["photos"] == []
    assert not app.state.store.exists(f"events/{event_id}/uploads/{upload_id}/{0:015d}")  # pieces dropped
    _age(app, upload_id, STALE_FINISH + timedelta(minutes=1))
    with unit_of_work(app.state.make_session, RecordingSender()) as uow:
        assert sweep_stale_assemblies(uow) == []  # never queued again


def test_an_assembly_that_fails_once_succeeds_on_the_next_try(app, signed_in):
    event_id = new_event(signed_in)
    upload_id = _uploaded(signed_in, event_id, noise_jpeg(seed=13, size=(400, 300)))
    real = app.state.store

    class FlakyStore(_UnreadableStore):
        def open(self, key: str):
            if not failed:
                failed.append(key)
                raise OSError("a blip")
            return real.open(key)

    failed: list[str] = []
    statuses = _assemble_until_settled(app, signed_in, FlakyStore(real, OSError()), upload_id, event_id)
    assert statuses == ["assembling", "done"]
    assert len(signed_in.get(f"/dashboard/events/{event_id}/uploads/{upload_id}").json()["result"]["photos"]) == 1

