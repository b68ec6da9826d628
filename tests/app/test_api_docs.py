"""`/docs` works offline: Swagger UI's files come from this process, nothing from another host,
and it renders the operations in a real headless Chromium under the site's CSP."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.test_selfie_page_browser import CHROMEDRIVER, CHROMIUM
from tests.conftest import RecordingSender, live_server

# The one policy for every page (COORDINATION.md; hardening-b's middleware sets it for the site).
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'; object-src 'none'")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[name] for name in ("src", "href") if attrs.get(name)]
        self.inline_scripts += tag == "script" and "src" not in attrs
        self.inline_styles += tag == "style" or "style" in attrs


def test_docs_page_and_assets_are_served_here_and_name_no_other_host(settings):
    with TestClient(create_app(settings)) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        links = Links()
        links.feed(page.text)
        assert links.inline_scripts == 0 and links.inline_styles == 0  # works under CSP without unsafe-inline
        assert not re.search(r"(https?:)?//", page.text)
        assert {u.rsplit("/", 1)[1] for u in links.urls} == {
            "swagger-ui.css", "favicon.png", "swagger-ui-bundle.js", "start-swagger-ui.js"}
        for url in links.urls:
            assert url.startswith("/docs/assets/"), url
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
        css = client.get("/docs/assets/swagger-ui.css").text
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", css) and "@import" not in css
        start = client.get("/docs/assets/start-swagger-ui.js").text
        assert "validatorUrl: null" in start and "http" not in start
        assert client.get("/redoc").status_code == 404  # it would load its script from a CDN


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Chromium: apt-get install -y chromium chromium-driver")
def test_docs_render_the_operations_offline_in_chromium(settings, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(settings)
    app.state.sender = RecordingSender()

    @app.middleware("http")
    async def content_security_policy(request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        return response

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Every host but loopback fails to resolve: the page must not need the internet.
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        with live_server(app) as base:
            operations = sum(len([m for m in item if m in ("get", "post", "patch", "delete", "put")])
                             for item in app.openapi()["paths"].values())
            for width, height in ((1366, 900), (390, 844)):
                driver.set_window_size(width, height)
                driver.get(f"{base}/docs")
                WebDriverWait(driver, 60).until(
                    lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= operations)
                assert "Finishline" in driver.find_element(By.CSS_SELECTOR, ".info .title").text
                driver.save_screenshot(str(tmp_path / f"docs-{width}x{height}.png"))
            # Open one operation: its documented errors (problem+json, with their codes) show.
            driver.set_window_size(1366, 900)
            driver.find_element(By.ID, "operations-runners-enrol_runner_api_v1_events__event_id__runners_post") \
                .find_element(By.CSS_SELECTOR, ".opblock-summary").click()
            WebDriverWait(driver, 30).until(lambda d: "multiple_faces" in d.find_element(By.ID, "swagger-ui").text)
            driver.execute_script("arguments[0].scrollIntoView()",
                                  driver.find_element(By.CSS_SELECTOR, "tr.response[data-code='422']"))
            driver.save_screenshot(str(tmp_path / "docs-enrol-open.png"))
            resources = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)")
            logs = driver.get_log("browser")
    finally:
        driver.quit()
    assert resources and all(url.startswith(base) for url in resources), resources
    problems = [entry["message"] for entry in logs if entry["level"] == "SEVERE"
                or "Content Security Policy" in entry["message"]]
    assert not problems, problems
