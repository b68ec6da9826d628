"""The selfie page in a real headless Chromium (Debian's `chromium` and `chromium-driver`)."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from app.main import create_app
from tests.app.test_matching import InlineSender, identity_image, jpeg
from tests.conftest import free_port, new_api_key

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium: apt-get install -y chromium chromium-driver",
)


@pytest.fixture
def server(settings):
    app = create_app(settings)
    app.state.sender = InlineSender(app.state.make_session)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    key = new_api_key(settings)
    base = f"http://127.0.0.1:{port}"
    event = httpx.post(f"{base}/api/v1/events", json={"name": "Browser Run"},
                       headers={"Authorization": f"Bearer {key}"}).json()
    yield {"base": base, "event": event, "key": key}
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def fill(browser, *, name: str, email: str, bib: str, selfie, consent: bool) -> None:
    from selenium.webdriver.common.by import By

    for field, value in (("name", name), ("email", email), ("bib", bib)):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "selfie").send_keys(str(selfie))
    box = browser.find_element(By.ID, "consent")
    if box.is_selected() != consent:
        box.click()
    browser.find_element(By.ID, "submit").click()


def wait_for(browser, element_id: str):
    """The element on the page the form posted to (a click returns before that page loads)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, element_id)))


def test_selfie_page_in_a_browser(server, browser, tmp_path, faces_dir):
    from selenium.webdriver.common.by import By

    no_face = tmp_path / "landscape.jpg"
    no_face.write_bytes(jpeg(Image.fromarray(np.random.default_rng(3).integers(0, 255, (240, 320, 3), np.uint8))))
    good = tmp_path / "me.jpg"
    good.write_bytes(jpeg(identity_image(faces_dir, "john_bolton", 1)))

    browser.get(f"{server['base']}/e/{server['event']['slug']}")
    assert "Browser Run" in browser.find_element(By.TAG_NAME, "h1").text
    assert not browser.find_element(By.ID, "consent").is_selected()  # consent is never pre-ticked

    fill(browser, name="Ada Lovelace", email="ada@example.com", bib="42", selfie=no_face, consent=True)
    error = wait_for(browser, "error").text
    assert "could not find a face" in error
    assert browser.find_element(By.ID, "name").get_attribute("value") == "Ada Lovelace"
    assert browser.find_element(By.ID, "email").get_attribute("value") == "ada@example.com"
    assert browser.find_element(By.ID, "bib").get_attribute("value") == "42"
    assert browser.find_element(By.ID, "consent").is_selected()

    fill(browser, name="Ada Lovelace", email="ada@example.com", bib="42", selfie=good, consent=True)
    assert "Your selfie works" in wait_for(browser, "confirmation").text
    event = httpx.get(f"{server['base']}/api/v1/events/{server['event']['id']}",
                      headers={"Authorization": f"Bearer {server['key']}"}).json()
    assert event["stats"]["runners"] == 1
