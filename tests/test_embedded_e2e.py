"""The embedded default end to end: `finishline run` as a user starts it, real photos, real networks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.db.session import make_engine
from tests.app.test_matching import canvas
from tests.app.test_webhooks import Receiver
from tests.conftest import REPO, finishline_run, make_settings, wait_until_processed
from tests.images import identity_photo


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("embedded") / "data"
    # the webhook receiver is on loopback
    with finishline_run(data_dir, extra_env={"FINISHLINE_WEBHOOK_ALLOW_PRIVATE": "true"},
                        stale_after_s=30, sweep_every_s=5) as running:
        yield running


def test_upload_is_processed_with_faces(server, faces_dir):
    client = server["client"]
    event = client.post("/api/v1/events", json={"name": "Embedded"}).json()
    group = faces_dir / "groups" / "dlib_voc_2008_002079.jpg"  # 6 faces
    files = [("files", (group.name, group.read_bytes())),
             ("files", ("runner.jpg", identity_photo(faces_dir, "andy_roddick", 1).read_bytes())),
             ("files", ("truncated.jpg", identity_photo(faces_dir, "andy_roddick", 2).read_bytes()[:2500]))]
    body = client.post(f"/api/v1/events/{event['id']}/photos", files=files).json()
    assert len(body["photos"]) == 3, body
    final = wait_until_processed(client, event["id"], expected=3)
    assert final["stats"]["photos_done"] == 2 and final["stats"]["photos_failed"] == 1
    by_name = {p["filename"]: client.get(f"/api/v1/photos/{p['id']}").json() for p in body["photos"]}
    group_photo = by_name[group.name]
    assert group_photo["status"] == "done" and (group_photo["width"], group_photo["height"]) == (500, 375)
    assert 5 <= len(group_photo["faces"]) <= 7
    for face in group_photo["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 500 and 0 <= y1 < y2 <= 375 and 0 < face["score"] <= 1
    assert len(by_name["runner.jpg"]["faces"]) >= 1
    failed = by_name["truncated.jpg"]
    assert failed["status"] == "failed" and failed["error"] and failed["faces"] == []
    assert final["stats"]["faces"] == len(group_photo["faces"]) + len(by_name["runner.jpg"]["faces"])


def test_ingest_uploads_folders_and_zips_and_is_safe_to_rerun(server, faces_dir, tmp_path):
    client = server["client"]
    event = client.post("/api/v1/events", json={"name": "Ingest"}).json()
    folder = tmp_path / "camera1"
    (folder / "sub").mkdir(parents=True)
    for n in (1, 2):
        (folder / f"{n}.jpg").write_bytes(identity_photo(faces_dir, "tim_henman", n).read_bytes())
    (folder / "sub" / "3.JPG").write_bytes(identity_photo(faces_dir, "tim_henman", 3).read_bytes())
    (folder / "readme.txt").write_text("ignored")
    (folder / ".hidden.jpg").write_bytes(b"ignored")
    archive = tmp_path / "camera2.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(identity_photo(faces_dir, "tim_henman", 4), "a/4.jpg")
        z.writestr("a/broken.jpg", b"not really a jpeg")
    env = {**server["env"], "FINISHLINE_API_URL": server["base"], "FINISHLINE_API_KEY": server["key"]}

    def ingest() -> str:
        result = subprocess.run([sys.executable, "-m", "app.cli", "ingest", event["id"], str(folder), str(archive)],
                                env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = ingest()
    assert "uploaded: 4" in first and "rejected: 1" in first and "camera2.zip/a/broken.jpg" in first
    assert "ignored (not a photo): 1" in first
    second = ingest()
    assert "uploaded: 0" in second and "already there (skipped): 4" in second
    photos = client.get(f"/api/v1/events/{event['id']}/photos").json()["items"]
    assert sorted(p["filename"] for p in photos) == ["1.jpg", "2.jpg", "3.JPG", "camera2.zip/a/4.jpg"]


def test_webhooks_from_the_real_worker_reach_a_receiver_that_was_down(server, faces_dir):
    """Photo processed and runner matched by the real worker; the receiver is down at first, so
    Celery retries with backoff; once it is up each event arrives once, correctly signed."""
    client = server["client"]
    receiver = Receiver()  # not started yet: connection refused
    event = client.post("/api/v1/events", json={"name": "Hooks"}).json()
    hook = client.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["runner.matched", "event.processed"]})
    receiver.secret = hook.json()["secret"]
    photo = canvas(faces_dir, ["paul_burrell/2", "spencer_abraham/1"])
    uploaded = client.post(f"/api/v1/events/{event['id']}/photos", files=[("files", ("finish.jpg", photo))]).json()
    wait_until_processed(client, event["id"], expected=1)
    selfie = identity_photo(faces_dir, "paul_burrell", 1).read_bytes()
    runner = client.post(f"/api/v1/events/{event['id']}/runners", files={"selfie": ("me.jpg", selfie)},
                         data={"name": "Paul", "email": "paul@example.org", "consent": "true"}).json()
    time.sleep(2)  # let the first attempts fail
    receiver.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            types = {(b["type"], b["data"].get("runner_id")) for b in receiver.received}
            if {("event.processed", None), ("runner.matched", runner["id"])} <= types:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not delivered: {receiver.received}\n{server['log'].read_text()[-3000:]}")
    finally:
        receiver.stop()
    matched = [b for b in receiver.received if b["data"].get("runner_id") == runner["id"]]
    assert [m["photo_id"] for m in matched[-1]["data"]["matches"]] == [uploaded["photos"][0]["id"]]
    assert len({b["id"] for b in receiver.received}) == len(receiver.received) and receiver.bad_signatures == 0
    engine = make_engine(make_settings(Path(server["env"]["FINISHLINE_DATA_DIR"])).resolved_database_url)
    with engine.connect() as conn:  # event.processed was sent while the receiver was down: retried
        attempts = conn.execute(text(
            "SELECT d.attempt, d.succeeded FROM webhook_deliveries d JOIN webhook_events e "
            "ON e.id = d.webhook_event_id WHERE e.type = 'event.processed' ORDER BY d.attempt")).all()
    engine.dispose()
    assert attempts[0] == (1, False) and attempts[-1][1] and sum(ok for _, ok in attempts) == 1, attempts


def test_a_dashboard_zip_is_expanded_by_the_worker(server, faces_dir, tmp_path):
    """A resumable upload through `finishline run`: the API stores the pieces and records
    `assembling`; the worker (embedded broker) expands the zip, the page's poll gets the report."""
    from tests.app.dashboard_helpers import csrf_of, new_user, sign_in
    from tests.app.test_dashboard import new_event

    data_dir = Path(server["env"]["FINISHLINE_DATA_DIR"])
    email = new_user(make_settings(data_dir), "zips@example.org")
    archive = tmp_path / "camera.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for n in (1, 2):
            z.write(identity_photo(faces_dir, "eric_clapton", n), f"km{n}/{n}.jpg")
        z.writestr("readme.txt", b"not a photo")
    data = archive.read_bytes()
    with httpx.Client(base_url=server["base"], timeout=60) as browser:
        assert sign_in(browser, email).status_code == 303
        event_id = new_event(browser, "Zips")
        headers = {"X-CSRF-Token": csrf_of(browser.get(f"/dashboard/events/{event_id}").text)}
        base = f"/dashboard/events/{event_id}/uploads"
        upload = browser.post(base, json={"filename": archive.name, "size": len(data)}, headers=headers).json()
        piece, offset = 64 * 1024, 0
        while offset < len(data):
            state = browser.put(f"{base}/{upload['id']}?offset={offset}", content=data[offset:offset + piece],
                                headers=headers).json()
            offset = state["offset"]
        assert state["status"] == "assembling"
        deadline = time.monotonic() + 120
        while (state := browser.get(f"{base}/{upload['id']}").json())["status"] != "done":
            assert time.monotonic() < deadline, f"never assembled: {state}\n{server['log'].read_text()[-3000:]}"
            time.sleep(0.3)
        photos = sorted(p["filename"] for p in state["result"]["photos"])
        assert photos == ["camera.zip/km1/1.jpg", "camera.zip/km2/2.jpg"]
        assert [r["filename"] for r in state["result"]["rejected"]] == ["camera.zip/readme.txt"]
        deadline = time.monotonic() + 180
        while (stats := browser.get(f"/dashboard/events/{event_id}/stats").json())["photos_done"] < 2:
            assert time.monotonic() < deadline, stats
            time.sleep(0.5)
    assert f"upload {upload['id']}: 2 photos, 1 rejected" in server["log"].read_text()  # the worker's log line


def test_ctrl_c_stops_api_and_worker(server):
    process = server["process"]
    # this run's workers only (other test runs on the machine may have theirs): its data dir
    data_dir = server["env"]["FINISHLINE_DATA_DIR"]
    children = [pid for pid in subprocess.run(["pgrep", "-f", "app.cli worker"], capture_output=True,
                                              text=True).stdout.split()
                if _environ_has(pid, f"FINISHLINE_DATA_DIR={data_dir}")]
    assert children, "the worker should be running beside the API"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) in (0, 130)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [pid for pid in children if os.path.exists(f"/proc/{pid}")
                 and "app.cli" in open(f"/proc/{pid}/cmdline").read()]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, "worker processes outlived `finishline run`"


def _environ_has(pid: str, entry: str) -> bool:
    try:
        return entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone already, or not ours to read
        return False
