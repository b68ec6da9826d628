"""Driving the pages in a real headless Chromium (Debian's `chromium` and `chromium-driver`).

- `live_server(app)`: the app under uvicorn on a loopback port, in a thread, with the project's
  Content-Security-Policy (COORDINATION.md) added where the app has not set one, so Chromium
  enforces it: a page that needed an inline script or style breaks its test.
- `chromium(viewport)`: a browser at a phone (390x844) or desktop (1366x900) viewport.
- `check_page(driver, name)`: axe-core (vendored from npm in tests/vendor, never served to users)
  on the page as it is now, failing on serious or critical violations, and a screenshot to
  $FINISHLINE_SCREENSHOTS (default: a folder under the system temp dir) for people to look at.
- `WorkerSender`: the worker in a thread with the real networks, so counts change while a
  page watches; ASSEMBLE_UPLOAD in a second thread (its own queue, like a worker's); MATCH_RUNNER
  runs inline as in tests/app/test_matching.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.db.session import unit_of_work
from app.face_backend import load_face_backend
from app.services import matching
from app.services.processing import ProcessingContext, process_photos
from tests.conftest import live_server as serve
from worker.dispatch import ASSEMBLE_UPLOAD, MATCH_RUNNER, PROCESS_PHOTO
from worker.tasks import run_assembly

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                    reason="needs Chromium: apt-get install -y chromium chromium-driver")
VIEWPORTS = {"phone": (390, 844), "desktop": (1366, 900)}
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("FINISHLINE_SCREENSHOTS", Path(tempfile.gettempdir()) / "finishline-screenshots"))


CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'; object-src 'none'")


class WithCsp:
    """ASGI wrapper: the CSP header on every response that has none."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_csp(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_csp if scope["type"] == "http" else send)


def live_server(app):
    """The app under the enforced CSP (WithCsp), served like tests.conftest.live_server."""
    return serve(WithCsp(app), lifespan="off")


@contextmanager
def chromium(viewport: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    width, height = VIEWPORTS[viewport]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    if viewport == "phone":  # a touch screen with a phone's pixel ratio, so `pointer: coarse` holds
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": True},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0 Mobile Safari/537.36"})
    else:
        options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    if viewport != "phone":
        # the window size includes no browser chrome in headless mode, but set the viewport exactly
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.viewport = viewport
    try:
        yield driver
    finally:
        driver.quit()


def axe_violations(driver) -> list[dict]:
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(JSON.stringify(r.violations)))"
        ".catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}])));")
    return json.loads(result)


def check_page(driver, name: str) -> None:
    """No serious or critical axe violation on the page; a full-page screenshot for a person."""
    driver.set_script_timeout(60)
    violations = [v for v in axe_violations(driver) if v["impact"] in ("serious", "critical")]
    screenshot(driver, name)
    blocked = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not blocked, f"{name}: the CSP blocked {blocked}"
    assert not violations, f"{name}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in violations)


def screenshot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{driver.viewport}.png"
    # full page: grow the viewport to the document's height for the shot, then restore it
    width, height = VIEWPORTS[driver.viewport]
    full = driver.execute_script("return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": max(height, min(int(full), 6000)),
        "deviceScaleFactor": 2 if driver.viewport == "phone" else 1, "mobile": driver.viewport == "phone"})
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2 if driver.viewport == "phone" else 1,
        "mobile": driver.viewport == "phone"})
    return path


def wait_until(driver, condition, timeout: float = 60, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message)


def by_id(driver, element_id: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((By.ID, element_id)))


class WorkerSender:
    """Photos processed by one background thread with the real networks, like a worker would;
    finished dashboard uploads assembled by another."""

    def __init__(self, app) -> None:
        self.app = app
        self.sent: list[tuple[str, tuple]] = []
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.uploads = ThreadPoolExecutor(max_workers=1)
        self.errors: list[BaseException] = []

    def send(self, task_name: str, *args: object) -> None:
        self.sent.append((task_name, args))
        state = self.app.state
        if task_name == MATCH_RUNNER:
            with unit_of_work(state.make_session) as uow:
                matching.match_runner(uow, *args)
        elif task_name == PROCESS_PHOTO:
            ids = args[0] if isinstance(args[0], list) else [args[0]]
            self.pool.submit(self._process, ids)
        elif task_name == ASSEMBLE_UPLOAD:
            self.uploads.submit(self._assemble, *args)

    def _assemble(self, upload_id: str, event_id: str) -> None:
        state = self.app.state
        try:
            run_assembly(state.settings, state.make_session, state.store, self, upload_id, event_id)
        except BaseException as exc:
            self.errors.append(exc)

    def _process(self, photo_ids: list[str]) -> None:
        state = self.app.state
        try:
            ctx = ProcessingContext(state.settings, state.make_session, state.store,
                                    load_face_backend(state.settings), self)
            process_photos(ctx, photo_ids, task_id=f"test-{photo_ids[0]}")
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.errors.append(exc)

    def close(self) -> None:
        self.uploads.shutdown(wait=True)  # first: an assembly queues photos
        self.pool.shutdown(wait=True)
