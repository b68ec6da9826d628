"""The embedded default end to end: `finishline run` as a user starts it, real photos, real networks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from tests.conftest import REPO, finishline_run, wait_until_processed
from tests.images import identity_photo


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("embedded") / "data"
    with finishline_run(data_dir, stale_after_s=30, sweep_every_s=5) as running:
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


def test_ctrl_c_stops_api_and_worker(server):
    process = server["process"]
    children = subprocess.run(["pgrep", "-f", "app.cli worker"], capture_output=True, text=True).stdout.split()
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
