"""Issue 12.1 with `finishline run` as a user starts it: a bad message file in the embedded
broker's queue is set aside (the worker keeps working), a worker that dies is restarted with a
backoff and the log says so, and `/readyz` reports a worker that is gone."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from tests.conftest import finishline_run, wait_until_processed
from tests.images import identity_photo

WORKER_STARTED = re.compile(r"worker started \(pid (\d+)\)")


def wait_for(predicate, what: str, log_path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen in {timeout}s; log:\n{log_path.read_text()[-4000:]}")


def worker_pids(log_path) -> list[int]:
    return [int(pid) for pid in WORKER_STARTED.findall(log_path.read_text())]


def live_group_members(pgid: int) -> list[int]:
    """Processes (not zombies) in this process group: a worker's pool processes are in its group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, _ppid, group = f.read().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue  # gone meanwhile
        if int(group) == pgid and state != "Z":
            members.append(int(entry))
    return members


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("supervised") / "data"
    extra_env = {"FINISHLINE_WORKER_HEARTBEAT_S": "1", "FINISHLINE_WORKER_RESTART_BACKOFF_S": "2"}
    with finishline_run(data_dir, extra_env=extra_env, stale_after_s=30, sweep_every_s=5) as running:
        client, log_path = running["client"], running["log"]
        wait_for(lambda: client.get("/readyz").status_code == 200, "a ready worker", log_path)
        yield running | {"queue": data_dir / "broker" / "queue"}


def upload_one(client, faces_dir, person: str, index: int) -> str:
    event = client.post("/api/v1/events", json={"name": f"{person} {index}"}).json()
    photo = identity_photo(faces_dir, person, index)
    body = client.post(f"/api/v1/events/{event['id']}/photos", files=[("files", (photo.name, photo.read_bytes()))])
    assert body.status_code == 202, body.text
    return event["id"]


def test_a_bad_message_file_is_set_aside_and_the_worker_keeps_working(server, faces_dir):
    client, log_path, queue = server["client"], server["log"], server["queue"]
    pids_before = worker_pids(log_path)
    # what a crash mid-write or a full disk leaves behind; the names sort before any real message
    (queue / "0000000000001_00000000-0000-0000-0000-000000000001.photos.msg").write_bytes(b"")
    (queue / "0000000000002_00000000-0000-0000-0000-000000000002.photos.msg").write_bytes(b'{"body": "eyJhcmdz')
    (queue / "0000000000003_00000000-0000-0000-0000-000000000003.photos.msg").write_bytes(b'["not", "a message"]')

    event_id = upload_one(client, faces_dir, "andy_roddick", 1)
    final = wait_until_processed(client, event_id, expected=1, timeout=90)
    assert final["stats"]["photos_done"] == 1
    bad = sorted(p.name for p in (queue.parent / "bad").iterdir())
    assert [name[:13] for name in bad] == ["0000000000001", "0000000000002", "0000000000003"]
    log = log_path.read_text()
    assert log.count("set aside a bad message file") == 3
    assert worker_pids(log_path) == pids_before  # the same worker: it never stopped
    assert client.get("/readyz").json()["worker"] == "ok"


def test_readyz_reports_a_worker_that_is_gone_and_a_dead_worker_is_restarted(server, faces_dir):
    client, log_path = server["client"], server["log"]
    [*_, pid] = worker_pids(log_path)

    os.kill(pid, signal.SIGSTOP)  # frozen: alive for the OS, silent for us
    try:
        gone = wait_for(lambda: (r := client.get("/readyz")).status_code == 503 and r, "readyz 503", log_path)
        assert gone.json()["worker"].startswith("unavailable: no worker heartbeat for")
        assert gone.json()["database"] == "ok" and gone.json()["broker"] == "ok"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: client.get("/readyz").status_code == 200, "readyz ok again", log_path)

    assert live_group_members(pid)[1:], "the worker's pool processes run beside it"
    os.kill(pid, signal.SIGKILL)  # an OOM kill
    wait_for(lambda: worker_pids(log_path)[-1] != pid, "a restarted worker", log_path)
    # its pool processes go with it, not left behind holding the networks' memory
    wait_for(lambda: not live_group_members(pid), "the killed worker's pool processes gone", log_path, timeout=15)
    assert re.search(rf"worker \(pid {pid}\) exited with code -9 after \d+ s; restarting it in 2 s", log_path.read_text())
    wait_for(lambda: client.get("/readyz").status_code == 200, "the new worker ready", log_path)
    event_id = upload_one(client, faces_dir, "andy_roddick", 2)
    assert wait_until_processed(client, event_id, expected=1, timeout=90)["stats"]["photos_done"] == 1
