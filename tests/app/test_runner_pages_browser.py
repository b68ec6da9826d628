"""The runner pages in a real headless Chromium, at a phone and a desktop viewport, with the real
face networks: selfie form (preview, shrink, errors that keep the selfie, a dropped connection),
confirmation, gallery (grid, viewer with swipe, face mark, "Not me" with undo, sharing), photo,
delete and unsubscribe pages; axe-core on each, and a screenshot of each."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from app.db import Runner
from app.db.session import unit_of_work
from app.services import tokens
from tests.app.browser import by_id, check_page, chromium, live_server, needs_chromium, screenshot, wait_until
from tests.app.test_matching import EVENT_PHOTOS, identity_image, world  # noqa: F401 - fixture

pytestmark = needs_chromium


def big_selfie(faces_dir, person: str) -> bytes:
    """A phone-sized photo (3000 px, a few MB): the page must shrink it before sending."""
    image = identity_image(faces_dir, person, 1).resize((3000, 3000), Image.LANCZOS)
    noise = np.random.default_rng(0).integers(0, 24, (3000, 3000, 3), np.uint8)  # sensor noise: a real file size
    image = Image.fromarray(np.clip(np.asarray(image, np.int16) + noise - 12, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def fill(driver, *, name: str, email: str, bib: str, selfie, consent: bool = True) -> None:
    from selenium.webdriver.common.by import By

    for field, value in (("name", name), ("email", email), ("bib", bib)):
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    if selfie is not None:
        driver.find_element(By.ID, "selfie").send_keys(str(selfie))
        wait_until(driver, lambda d: d.find_element(By.ID, "selfie-preview").get_attribute("src").startswith("blob:"),
                   message="no preview of the chosen selfie")
    box = driver.find_element(By.ID, "consent")
    if box.is_selected() != consent:
        box.click()


@pytest.fixture
def photos_event(world):
    event = world.event(name="Harbour Half Marathon", starts_on="2027-04-11")
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    return world, event, photo_ids


@pytest.mark.parametrize("viewport", ["phone", "desktop"])
def test_runner_pages_in_a_browser(photos_event, viewport, tmp_path):
    from selenium.webdriver.common.by import By

    world, event, photos = photos_event
    no_face = tmp_path / "landscape.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (480, 640, 3), np.uint8)).save(no_face, "JPEG")
    me = tmp_path / "me.jpg"
    me.write_bytes(big_selfie(world.faces_dir, "bill_mcbride"))
    assert me.stat().st_size > 1_000_000

    with live_server(world.app) as base, chromium(viewport, tmp_path / "profile") as driver:
        driver.get(f"{base}/e/{event['slug']}")
        assert "Harbour Half Marathon" in driver.find_element(By.CLASS_NAME, "brand-name").text
        assert "Sunday 11 April 2027" in driver.find_element(By.CLASS_NAME, "brand-date").text
        assert not driver.find_element(By.ID, "consent").is_selected()  # consent is never pre-ticked
        assert driver.find_element(By.ID, "selfie").get_attribute("capture") == "user"
        check_page(driver, "selfie")

        # a photo without a face: the reason takes focus, and what was typed and chosen stays
        fill(driver, name="Bill McBride", email="bill@example.com", bib="42", selfie=no_face)
        driver.find_element(By.ID, "submit").click()
        error = wait_until(driver, lambda d: d.find_elements(By.ID, "error") and d.find_element(By.ID, "error"))
        wait_until(driver, lambda d: "could not find a face" in error.text)
        assert driver.switch_to.active_element.get_attribute("id") == "error"
        assert driver.find_element(By.ID, "name").get_attribute("value") == "Bill McBride"
        assert driver.find_element(By.ID, "bib").get_attribute("value") == "42"
        assert driver.find_element(By.ID, "selfie-preview").is_displayed()
        check_page(driver, "selfie-error")

        # the real selfie, shrunk in the browser to at most 1600 px before it is sent
        driver.find_element(By.ID, "selfie").send_keys(str(me))
        wait_until(driver, lambda d: d.execute_script(
            "const i = document.getElementById('selfie-preview'); return i.complete && i.naturalWidth > 0"
            " && Math.max(i.naturalWidth, i.naturalHeight) === 1600"), message="selfie not shrunk to 1600 px")
        if viewport == "phone":
            # the connection drops as the runner taps send: the page retries by itself
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
                "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
            driver.find_element(By.ID, "submit").click()
            wait_until(driver, lambda d: "Trying again" in d.find_element(By.ID, "upload-message").text)
            driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
                "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        else:
            driver.find_element(By.ID, "submit").click()
        try:
            confirmation = by_id(driver, "confirmation", timeout=120)
        except Exception:
            screenshot(driver, "selfie-send-failed")
            raise
        assert "You're in, Bill McBride" in confirmation.text
        check_page(driver, "enrolled")
        driver.refresh()  # post/redirect/get: a refresh shows the page again, never enrols again
        by_id(driver, "confirmation")
        with unit_of_work(world.app.state.make_session) as uow:
            assert uow.session.query(Runner).filter_by(event_id=event["id"]).count() == 1

        # the gallery: Bill is in a.jpg (a group photo) and c.jpg
        driver.find_element(By.ID, "gallery-link").click()
        grid = by_id(driver, "photo-grid")
        wait_until(driver, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#photo-grid img')].every(i => i.complete && i.naturalWidth > 0)"),
            message=str(driver.execute_script(
                "return [...document.images].map(i => [i.src, i.complete, i.naturalWidth])")))
        tiles = grid.find_elements(By.CSS_SELECTOR, ".tile")
        assert {t.get_attribute("data-photo-id") for t in tiles} == {photos["a.jpg"], photos["c.jpg"]}
        columns = driver.execute_script(
            "return getComputedStyle(document.getElementById('photo-grid')).gridTemplateColumns.split(' ').length")
        assert columns >= 2
        assert driver.find_elements(By.CSS_SELECTOR, ".tile .tile-svg .mark")  # their face marked on a group photo
        check_page(driver, "gallery")

        # the viewer: open, move on by swipe (phone) or button (desktop), download link
        tiles[0].click()
        viewer = by_id(driver, "viewer")
        wait_until(driver, lambda d: viewer.get_attribute("open") is not None)
        wait_until(driver, lambda d: d.execute_script(
            "const i = document.getElementById('viewer-image'); return i.complete && i.naturalWidth > 0"))
        assert driver.find_element(By.ID, "viewer-count").text == "1 / 2"
        check_page(driver, "viewer")
        if viewport == "phone":
            swipe(driver, "viewer-stage")
        else:
            driver.find_element(By.ID, "viewer-next").click()
        wait_until(driver, lambda d: d.find_element(By.ID, "viewer-count").text == "2 / 2")
        second = tiles[1].get_attribute("data-photo-id")
        assert driver.find_element(By.ID, "viewer-download").get_attribute("href").endswith(f"/{second}/original")
        download = httpx.get(driver.find_element(By.ID, "viewer-download").get_attribute("href"))
        assert download.status_code == 200 and download.content[:2] == b"\xff\xd8"

        # "Not me" asks first, then the gallery offers Undo
        driver.find_element(By.ID, "viewer-not-me").click()
        by_id(driver, "not-me-confirm")
        wait_until(driver, lambda d: d.find_element(By.ID, "not-me-confirm").is_displayed())
        screenshot(driver, "viewer-not-me")
        driver.find_element(By.ID, "not-me-yes").click()
        undo = by_id(driver, "undo-button")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile")) == 1
        check_page(driver, "gallery-undo")
        undo.click()
        wait_until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#photo-grid .tile")) == 2)

        # each photo's own page (the viewer without script), delete and unsubscribe pages
        token = driver.current_url.split("/g/")[1].split("?")[0]
        driver.get(f"{base}/g/{token}/p/{second}")
        by_id(driver, "main")
        check_page(driver, "photo")
        runner_id = tokens.read_token(world.settings.signing_key, "gallery", token)
        driver.get(f"{base}/d/{tokens.make_token(world.settings.signing_key, 'delete', runner_id)}")
        by_id(driver, "confirm-delete")
        check_page(driver, "delete")
        driver.get(f"{base}/u/{tokens.make_token(world.settings.signing_key, 'unsubscribe', runner_id)}")
        by_id(driver, "unsubscribe")
        check_page(driver, "unsubscribe")
        driver.get(f"{base}/e/no-such-event")
        check_page(driver, "not-found")


def swipe(driver, element_id: str) -> None:
    """A finger moving right to left across the element."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.interaction import POINTER_TOUCH
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    stage = driver.find_element(By.ID, element_id)
    rect = stage.rect
    y = int(rect["y"] + rect["height"] / 2)
    actions = ActionBuilder(driver, mouse=PointerInput(POINTER_TOUCH, "finger"))
    actions.pointer_action.move_to_location(int(rect["x"] + rect["width"] * 0.8), y).pointer_down()
    actions.pointer_action.move_to_location(int(rect["x"] + rect["width"] * 0.2), y).pointer_up()
    actions.perform()


def test_a_selfie_with_two_faces_lets_the_runner_tap_theirs(world, tmp_path):
    from selenium.webdriver.common.by import By

    from tests.app.test_reenrolment import two_faces

    event = world.event(name="Group Selfie Run")
    _, selfie = two_faces(world)
    path = tmp_path / "us.jpg"
    path.write_bytes(selfie)
    with live_server(world.app) as base, chromium("phone", tmp_path / "profile") as driver:
        driver.get(f"{base}/e/{event['slug']}")
        fill(driver, name="John Bolton", email="john@example.com", bib="", selfie=path)
        driver.find_element(By.ID, "submit").click()
        faces = wait_until(driver, lambda d: d.find_element(By.ID, "faces").is_displayed() and d.find_element(By.ID, "faces"))
        choices = faces.find_elements(By.CSS_SELECTOR, ".face-choice")
        assert len(choices) == 2
        assert all(img.get_attribute("src").startswith("data:image/jpeg")
                   for img in faces.find_elements(By.TAG_NAME, "img"))
        check_page(driver, "selfie-faces")
        choices[0].click()  # John Bolton is on the left
        driver.find_element(By.ID, "submit").click()
        assert "You're in" in by_id(driver, "confirmation", timeout=90).text
    with unit_of_work(world.app.state.make_session) as uow:
        assert uow.session.query(Runner).filter_by(event_id=event["id"], email="john@example.com").count() == 1


# Headless Chromium on Linux has no Web Share: a stand-in, there before the page's script runs,
# that records what the page hands it (as a phone's share sheet would get it).
WEB_SHARE = """
window.shared = [];
navigator.canShare = data => !!data;
navigator.share = data => {
  window.shared.push(data.files ? {files: data.files.map(f => [f.name, f.type, f.size])} : {title: data.title, url: data.url});
  return Promise.resolve();
};
"""
# The clipboard too, so nothing depends on the machine's clipboard or the window having focus.
CLIPBOARD = """
window.copied = [];
Object.defineProperty(navigator, "clipboard", {configurable: true, value: {
  writeText: text => { window.copied.push(text); return Promise.resolve(); }}});
"""


def test_the_gallery_shares_its_link_or_copies_it_and_shares_a_photo(world, tmp_path):
    from selenium.webdriver.common.by import By

    event = world.event(name="Harbour Half Marathon")
    photos = world.upload(event["id"], {"c.jpg": EVENT_PHOTOS["c.jpg"]})
    world.process(list(photos.values()))
    runner = world.enrol(event["id"], "bill_mcbride")
    token = tokens.make_token(world.settings.signing_key, "gallery", runner["id"])
    with live_server(world.app) as base, chromium("phone", tmp_path / "profile") as driver:
        gallery = f"{base}/g/{token}"
        stub = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WEB_SHARE})
        driver.get(gallery)
        share = by_id(driver, "share-gallery")
        wait_until(driver, lambda d: share.is_displayed(), message="no share button")
        share.click()
        wait_until(driver, lambda d: d.execute_script("return window.shared.length") == 1)
        assert driver.execute_script("return window.shared") == [
            {"title": "My photos from Harbour Half Marathon", "url": gallery}]

        # the viewer shares the photo file itself
        driver.find_element(By.CSS_SELECTOR, "#photo-grid .tile").click()
        photo_share = by_id(driver, "viewer-share")
        wait_until(driver, lambda d: photo_share.is_displayed())
        photo_share.click()
        wait_until(driver, lambda d: d.execute_script("return window.shared.length") == 2)
        original = httpx.get(f"{gallery}/photos/{photos['c.jpg']}/original").content
        assert driver.execute_script("return window.shared[1]") == {"files": [["photo.jpg", "image/jpeg", len(original)]]}

        # without Web Share the button copies the link
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": stub["identifier"]})
        driver.get(gallery)
        assert driver.execute_script("return typeof navigator.share") == "undefined"
        share = by_id(driver, "share-gallery")
        wait_until(driver, lambda d: share.is_displayed())
        driver.execute_script(CLIPBOARD)
        share.click()
        wait_until(driver, lambda d: share.text == "Link copied", message=share.text)
        assert driver.execute_script("return window.copied") == [gallery]
        # said to screen readers too: a focused button's new text is not read out
        status = driver.find_element(By.ID, "share-status")
        assert status.get_attribute("role") == "status" and "copied" in status.get_attribute("textContent")
        check_page(driver, "gallery-link-copied")
