"""The organiser dashboard in a real headless Chromium at a phone and a desktop viewport: sign in,
create an event, upload race photos and watch the counts change as a worker (the real networks,
in a thread) processes them; an upload whose connection drops mid-way and resumes, and one whose
tab is closed and that resumes when the file is chosen again; photos dropped on the page; runners,
sending (the HTML e-mail in its sandboxed frame) and settings (a threshold change rematching live)
pages. axe-core on every page and a screenshot of each."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest

from app.db import Photo, Runner, UploadSession
from app.db.session import unit_of_work
from app.jobs import ASSEMBLE_UPLOAD, REMATCH_EVENT
from app.main import create_app
from app.services import events as event_service
from app.services import matching
from tests.app.browser import WorkerSender, by_id, check_page, chromium, live_server, needs_chromium, wait_until
from tests.app.dashboard_helpers import PASSWORD, add_match, new_user
from tests.app.test_matching import identity_image, jpeg
from tests.conftest import migrated_settings, organisation_for_tests
from tests.images import noise_jpeg

pytestmark = needs_chromium
RACE_PHOTOS = ["race_pietro_test1.jpg", "race_pietro_test2.jpg", "race_pietro_test4.jpg"]
CHUNK = 64 * 1024


@pytest.fixture
def app(tmp_path):
    application = create_app(migrated_settings(tmp_path / "data", upload_chunk_bytes=CHUNK))
    application.state.sender = WorkerSender(application)
    yield application
    application.state.sender.close()
    assert not application.state.sender.errors


def network(driver, *, offline: bool = False, upload_bytes_per_s: int = -1) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload_bytes_per_s})


def stat(driver, field: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-stat="{field}"]').text


def item_states(driver) -> list[str]:
    # read in one script: the list re-renders while uploads move on (no stale elements)
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.upload-item'), li => li.querySelector('.state').innerText)")


def archive_of_noise(count: int, first_seed: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"finish/{i:03d}.jpg", noise_jpeg(seed=first_seed + i, size=(640, 480)))
    return out.getvalue()


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_dashboard_in_a_browser(app, viewport, tmp_path, faces_dir):
    from selenium.webdriver.common.by import By

    email = new_user(app.state.settings)
    with live_server(app) as base, chromium(viewport, tmp_path / "profile") as driver:
        driver.get(f"{base}/dashboard")
        assert driver.current_url.startswith(f"{base}/login")
        check_page(driver, "login")
        driver.find_element(By.NAME, "email").send_keys(email)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        by_id(driver, "new-event")
        check_page(driver, "events-empty")

        driver.find_element(By.NAME, "name").send_keys("Harbour Half Marathon")
        driver.execute_script("document.getElementById('starts_on').value = '2026-04-12'")
        driver.find_element(By.ID, "create-event").click()
        by_id(driver, "upload-form")
        event_id = driver.current_url.split("/dashboard/events/")[1].split("?")[0]
        check_page(driver, "event-empty")

        # three race photos: counts and the processing bar move without a reload
        paths = "\n".join(str(faces_dir / "groups" / name) for name in RACE_PHOTOS)
        driver.find_element(By.ID, "files").send_keys(paths)
        wait_until(driver, lambda d: stat(d, "photos") == "3", message="photo count never updated")
        wait_until(driver, lambda d: stat(d, "photos_done") == "3", timeout=180, message="processing never shown")
        wait_until(driver, lambda d: int(stat(d, "faces")) > 0)
        progress = driver.find_element(By.ID, "processing-progress")
        wait_until(driver, lambda d: progress.get_attribute("value") == progress.get_attribute("max") == "3")
        # each file's line follows its upload's own polling, which may come after the counts
        wait_until(driver, lambda d: all("added" in s for s in item_states(d)), message=str(item_states(driver)))
        check_page(driver, "event-uploaded")

        if viewport == "desktop":
            resumable_uploads(driver, app, base, event_id, tmp_path)

        with unit_of_work(app.state.make_session) as uow:  # runners as the selfie page would make them
            for name, mail, bib in (("Ada Lovelace", "ada@example.com", "101"), ("Grace Hopper", "grace@example.com", None),
                                    ("Katherine Johnson", "kj@example.com", "7")):
                uow.session.add(Runner(event_id=event_id, name=name, email=mail, bib=bib))
        for tab, name in (("runners", "runners"), ("send", "send"), ("settings", "settings")):
            driver.get(f"{base}/dashboard/events/{event_id}/{tab}")
            by_id(driver, "main")
            check_page(driver, name)
            if tab == "runners":
                assert len(driver.find_elements(By.CSS_SELECTOR, "#runners tbody tr")) == 3
                start_list = tmp_path / f"start-{viewport}.csv"
                start_list.write_text("bib,name,email\n230,Mary Jackson,mj@example.com\n23x,Typo,t@example.com\n")
                driver.find_element(By.CSS_SELECTOR, "details:has(#start-list-form) > summary").click()
                driver.find_element(By.ID, "start-list-file").send_keys(str(start_list))
                driver.find_element(By.CSS_SELECTOR, "#start-list-form button[type=submit]").click()
                assert "1 new" in by_id(driver, "import-result").text
                assert len(driver.find_elements(By.CSS_SELECTOR, "#runners tbody tr")) == 4
                check_page(driver, "runners-start-list")
            if tab == "send":
                assert driver.find_element(By.CSS_SELECTOR, "#qr-code svg")

        driver.get(f"{base}/dashboard")
        link = driver.find_element(By.LINK_TEXT, "Harbour Half Marathon")
        assert link.get_attribute("href").endswith(f"/dashboard/events/{event_id}")
        check_page(driver, "events")
        driver.find_element(By.ID, "sign-out").click()
        by_id(driver, "sign-in")


def resumable_uploads(driver, app, base: str, event_id: str, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    # 1. The connection drops mid-way: the page waits, then carries on by itself.
    dropped = tmp_path / "camera-a.zip"
    dropped.write_bytes(archive_of_noise(6, first_seed=100))
    network(driver, upload_bytes_per_s=256 * 1024)  # venue Wi-Fi: a piece takes a fraction of a second
    driver.find_element(By.ID, "files").send_keys(str(dropped))
    wait_until(driver, lambda d: _received(app, "camera-a.zip") >= 2 * CHUNK, message="no piece arrived")
    network(driver, offline=True)
    wait_until(driver, lambda d: any("Connection lost" in s for s in item_states(d)), message=str(item_states(driver)))
    before = _received(app, "camera-a.zip")
    assert 0 < before < dropped.stat().st_size
    network(driver, upload_bytes_per_s=256 * 1024)
    wait_until(driver, lambda d: any("6 photos added" in s for s in item_states(d)), timeout=120,
               message=str(item_states(driver)))

    # 2. The tab closes mid-way: choosing the same file again resumes where the server stopped.
    closed = tmp_path / "camera-b.zip"
    closed.write_bytes(archive_of_noise(6, first_seed=200))
    driver.get(f"{base}/dashboard/events/{event_id}")
    network(driver, upload_bytes_per_s=256 * 1024)
    driver.find_element(By.ID, "files").send_keys(str(closed))
    wait_until(driver, lambda d: _received(app, "camera-b.zip") >= 2 * CHUNK, message="no piece arrived")
    driver.get("about:blank")  # the organiser closes the tab
    stopped = _received(app, "camera-b.zip")
    network(driver)
    driver.get(f"{base}/dashboard/events/{event_id}")
    driver.find_element(By.ID, "files").send_keys(str(closed))
    wait_until(driver, lambda d: any("added" in s or "already there" in s for s in item_states(d)), timeout=120,
               message=str(item_states(driver)))
    with unit_of_work(app.state.make_session) as uow:
        sessions = uow.session.query(UploadSession).filter_by(filename="camera-b.zip").all()
        assert len(sessions) == 1 and sessions[0].status == "done"  # the same upload, carried on
        assert stopped > 0 and sessions[0].size_bytes == closed.stat().st_size
        assert uow.session.query(Photo).filter_by(event_id=event_id).count() == 3 + 6 + 6
        ids = [u.id for u in uow.session.query(UploadSession).filter_by(event_id=event_id)]
    # every upload (photos and zips) was assembled by the (stand-in) worker, once
    assert sorted(args[0] for name, args in app.state.sender.sent if name == ASSEMBLE_UPLOAD) == sorted(ids)
    check_page(driver, "event-resumed")


def _received(app, filename: str) -> int:
    with unit_of_work(app.state.make_session) as uow:
        upload = uow.session.query(UploadSession).filter_by(filename=filename).one_or_none()
        return upload.received_bytes if upload else 0


def sign_in(driver, base: str, email: str, path: str) -> None:
    """Open `path` of the dashboard, signing in on the way."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}{path}")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    wait_until(driver, lambda d: d.current_url.split("?")[0] == f"{base}{path}", message=driver.current_url)
    by_id(driver, "main")


def new_event(app, name: str) -> str:
    with unit_of_work(app.state.make_session) as uow:
        return event_service.create_event(uow, organisation_id=organisation_for_tests(uow).id, name=name,
                                          starts_on=None, match_threshold=0.48, retention_days=90).id


def done_photo(uow, event_id: str, i: int, thumb_key: str | None = None) -> Photo:
    photo = Photo(event_id=event_id, filename=f"finish-{i:03d}.jpg", sha256=f"{i:064d}", size_bytes=1,
                  content_type="image/jpeg", storage_key=f"events/{event_id}/originals/{i}.jpg", status="done",
                  thumb_key=thumb_key)
    uow.session.add(photo)
    uow.session.flush()
    return photo


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_the_send_page_shows_the_html_email_as_the_runner_gets_it(app, viewport, tmp_path, faces_dir):
    from selenium.webdriver.common.by import By

    email = new_user(app.state.settings)
    event_id = new_event(app, "Harbour Half Marathon")
    with unit_of_work(app.state.make_session) as uow:  # Ada is in two photos, never e-mailed
        runner = Runner(event_id=event_id, name="Ada Lovelace", email="ada@example.com")
        uow.session.add(runner)
        uow.session.flush()
        for i, index in enumerate((2, 3)):
            thumb = f"events/{event_id}/thumbs/{i}.jpg"
            app.state.store.put_bytes(thumb, jpeg(identity_image(faces_dir, "bill_mcbride", index).resize((400, 400))))
            photo = done_photo(uow, event_id, i, thumb)
            add_match(uow, event_id, runner.id, photo.id)
    with live_server(app) as base, chromium(viewport, tmp_path / "profile") as driver:
        sign_in(driver, base, email, f"/dashboard/events/{event_id}/send")
        assert "Ada Lovelace <ada@example.com>" in driver.find_element(By.CSS_SELECTOR, ".email-headers").text
        assert driver.find_element(By.ID, "sample-subject").text == "2 new photos of you from Harbour Half Marathon"
        frame = driver.find_element(By.ID, "email-frame")
        assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
        assert frame.get_attribute("title") == "Sample e-mail to Ada Lovelace <ada@example.com>"
        driver.switch_to.frame(frame)
        body = wait_until(driver, lambda d: d.find_elements(By.TAG_NAME, "body") and d.find_element(By.TAG_NAME, "body"))
        wait_until(driver, lambda d: "Hi Ada," in body.text, message="the HTML e-mail is not in the frame")
        assert "we found 2 new photos of you from Harbour Half Marathon" in body.text
        button = driver.find_element(By.LINK_TEXT, "See and download your photos")
        assert "/g/" in button.get_attribute("href")
        # its inline styles apply (the frame's own policy allows them): the green button, the grey page
        assert button.value_of_css_property("background-color") == "rgba(22, 163, 74, 1)"
        assert body.value_of_css_property("background-color") == "rgba(244, 244, 245, 1)"
        thumbs = driver.find_elements(By.CSS_SELECTOR, "img[alt^='Photo ']")
        assert len(thumbs) == 2
        wait_until(driver, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", t)
                                         for t in thumbs), message="the embedded thumbnails did not load")
        assert not driver.find_elements(By.TAG_NAME, "script")
        assert driver.execute_script("return document.documentElement.scrollHeight <= innerHeight")  # all in view
        driver.switch_to.default_content()
        plain = driver.find_element(By.ID, "sample-text")
        assert not plain.is_displayed()
        driver.find_element(By.CSS_SELECTOR, ".sample-plain summary").click()
        assert "/g/" in plain.text and "Hi Ada" in plain.text
        check_page(driver, "send-sample")
        # the sample on its own, as its link opens it: a sandboxed frame's console is not in the page's log
        driver.get(driver.find_element(By.LINK_TEXT, "Open the sample in a new tab").get_attribute("href"))
        wait_until(driver, lambda d: "Hi Ada," in d.find_element(By.TAG_NAME, "body").text)
        blocked = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not blocked, blocked


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_a_new_threshold_shows_the_rematch_progress_live(app, viewport, tmp_path):
    from selenium.webdriver.common.by import By

    email = new_user(app.state.settings)
    event_id = new_event(app, "Lakeside Run")
    with unit_of_work(app.state.make_session) as uow:
        for i in range(5):
            done_photo(uow, event_id, i)

    def chunk() -> bool:  # what the REMATCH_EVENT task does, one chunk of two photos at a time
        with unit_of_work(app.state.make_session) as uow:
            return matching.rematch_event_chunk(uow, event_id, chunk=2)

    def shown(driver) -> str:
        return driver.find_element(By.ID, "rematch-text").text if driver.find_element(By.ID, "rematch-text").is_displayed() else ""

    with live_server(app) as base, chromium(viewport, tmp_path / "profile") as driver:
        settings = f"/dashboard/events/{event_id}/settings"
        sign_in(driver, base, email, settings)
        assert not driver.find_element(By.ID, "rematch").is_displayed()
        field = driver.find_element(By.ID, "match_threshold")
        field.clear()
        field.send_keys("0.55")
        driver.find_element(By.ID, "save-settings").click()
        wait_until(driver, lambda d: "matched again" in d.find_element(By.ID, "flash").text)
        assert (REMATCH_EVENT, (event_id,)) in app.state.sender.sent
        assert shown(driver) == "Rematching photos: 0 of 5"
        driver.execute_script("window.notReloaded = true")

        assert chunk()
        wait_until(driver, lambda d: shown(d) == "Rematching photos: 2 of 5", message=shown(driver))
        progress = driver.find_element(By.ID, "rematch-progress")
        assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("2", "5")
        assert driver.execute_script("return window.notReloaded") is True
        check_page(driver, "settings-rematching")

        # the event page shows it too, and carries on live to the end
        driver.get(f"{base}/dashboard/events/{event_id}")
        assert shown(driver) == "Rematching photos: 2 of 5"
        driver.execute_script("window.notReloaded = true")
        assert chunk()
        wait_until(driver, lambda d: shown(d) == "Rematching photos: 4 of 5", message=shown(driver))
        assert not chunk()
        status = driver.find_element(By.ID, "rematch-status")
        wait_until(driver, lambda d: status.text == "Rematch finished: all 5 photos now use the new threshold.",
                   message=status.text)
        assert not driver.find_element(By.ID, "rematch-running").is_displayed()
        assert driver.execute_script("return window.notReloaded") is True
        check_page(driver, "event-rematched")

        driver.get(f"{base}{settings}")  # nothing running: nothing shown
        by_id(driver, "settings-form")
        assert not driver.find_element(By.ID, "rematch").is_displayed()
        check_page(driver, "settings")


DROP = """
const [names, payloads] = arguments;
const zone = document.getElementById("dropzone");
const transfer = new DataTransfer();
names.forEach((name, i) => {
  const bytes = Uint8Array.from(atob(payloads[i]), c => c.charCodeAt(0));
  transfer.items.add(new File([bytes], name, {type: "image/jpeg", lastModified: 1700000000000}));
});
const fire = type => zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
const seen = {enter: !fire("dragenter"), over: !fire("dragover"), highlighted: zone.classList.contains("is-over")};
seen.drop = !fire("drop");
seen.highlightedAfter = zone.classList.contains("is-over");
return seen;
"""


def test_photos_dropped_on_the_event_page_are_uploaded_and_counted(app, tmp_path, faces_dir):
    """Real drag events carrying real JPEG files, dispatched on the drop zone."""
    email = new_user(app.state.settings)
    event_id = new_event(app, "Harbour Half Marathon")
    names = RACE_PHOTOS[:2]
    payloads = [base64.b64encode((faces_dir / "groups" / name).read_bytes()).decode() for name in names]
    with live_server(app) as base, chromium("desktop", tmp_path / "profile") as driver:
        sign_in(driver, base, email, f"/dashboard/events/{event_id}")
        seen = driver.execute_script(DROP, names, payloads)
        # dragover cancelled is what lets a browser drop at all; drop cancelled keeps the page (no navigation)
        assert seen == {"enter": True, "over": True, "highlighted": True, "drop": True, "highlightedAfter": False}, seen
        wait_until(driver, lambda d: len(item_states(d)) == 2 and all("1 photo added" in s for s in item_states(d)),
                   message=str(item_states(driver)))
        wait_until(driver, lambda d: stat(d, "photos") == "2", message="photo count never updated")
        wait_until(driver, lambda d: stat(d, "photos_done") == "2", timeout=180, message="processing never shown")
        wait_until(driver, lambda d: int(stat(d, "faces")) > 0)
        with unit_of_work(app.state.make_session) as uow:
            stored = uow.session.query(Photo).filter_by(event_id=event_id).all()
            assert sorted(p.filename for p in stored) == sorted(names)
            assert {p.size_bytes for p in stored} == {(faces_dir / "groups" / n).stat().st_size for n in names}
        check_page(driver, "event-dropped")


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_an_upload_that_cannot_be_put_together_says_so_and_starts_afresh(app, viewport, tmp_path, monkeypatch):
    """A piece lost from the store: the file's line says what to do, and choosing the file again
    starts a new upload rather than resuming the failed one."""
    from app.services import chunked_uploads

    def piece_gone(self, n: int = -1) -> bytes:  # type: ignore[no-untyped-def]
        raise FileNotFoundError("piece")

    email = new_user(app.state.settings)
    event_id = new_event(app, "Harbour Half Marathon")
    photo = tmp_path / "finish.jpg"
    photo.write_bytes(noise_jpeg(seed=11, size=(400, 300)))
    with live_server(app) as base, chromium(viewport, tmp_path / "profile") as driver:
        sign_in(driver, base, email, f"/dashboard/events/{event_id}")
        monkeypatch.setattr(chunked_uploads._Pieces, "read", piece_gone)
        driver.find_element("id", "files").send_keys(str(photo))
        wait_until(driver, lambda d: any("upload the file again" in s for s in item_states(d)),
                   message=str(item_states(driver)))
        assert driver.execute_script("return localStorage.length") == 0  # nothing left to resume
        check_page(driver, "event-upload-failed")
        monkeypatch.undo()
        driver.find_element("id", "files").send_keys(str(photo))
        wait_until(driver, lambda d: "1 photo added" in item_states(d)[-1], message=str(item_states(driver)))
