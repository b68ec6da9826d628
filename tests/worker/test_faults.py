"""Fault tests with real processes: a worker SIGKILLed mid-photo, a Redis restart that loses the
queue, the broker and the database going away under the API. In every case each photo ends
`done` exactly once (no duplicate faces), and the API answers 503 while something is down and
recovers on its own.

Each test runs its own `redis-server` on a free port (no persistence, so a restart really loses
queued messages) and its own `finishline worker` subprocesses; the shared Redis is not touched.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import func, select

from app.db import Face, Photo
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from tests.conftest import (free_port, make_settings, new_api_key, service_env, start_process, stop_process,
                            wait_until_processed)
from worker.dispatch import PHOTOS_QUEUE

# Short enough that the sweeper acts within seconds (10 s is the settings' floor).
STALE_AFTER_S = 10
SWEEP_EVERY_S = 1

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


class PrivateRedis:
    """A throwaway redis-server on a free port; `restart()` loses everything (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # like a crash: nothing is saved
            self.process.wait()

    def queue_length(self) -> int:
        return redis.Redis(port=self.port).llen(PHOTOS_QUEUE)  # where PROCESS_PHOTO travels


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_settings(tmp_path: Path, private_redis: PrivateRedis):
    settings = make_settings(tmp_path / "data", redis_url=private_redis.url,
                             stale_after_s=STALE_AFTER_S, sweep_every_s=SWEEP_EVERY_S)
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.resolved_database_url)
    return settings


@pytest.fixture
def api(fault_settings) -> Iterator[TestClient]:
    """The API in-process, sending real tasks to the private Redis."""
    with TestClient(create_app(fault_settings),
                    headers={"Authorization": f"Bearer {new_api_key(fault_settings)}"}) as client:
        yield client


@pytest.fixture
def workers(fault_settings, tmp_path: Path) -> Iterator[list]:
    """Start `finishline worker` processes with `start(beat=...)`; all are stopped afterwards."""
    started: list[subprocess.Popen] = []

    def start(*, beat: bool) -> subprocess.Popen:
        log = tmp_path / f"worker-{len(started)}.log"
        args = ["worker", "--concurrency=1", "--loglevel=INFO"] + (["--beat"] if beat else [])
        process = start_process(args, service_env(fault_settings), log)
        process.log_path = log
        started.append(process)
        return process

    yield start
    for process in started:
        for pid in [process.pid, *descendants(process.pid)]:
            _kill(pid)
        stop_process(process, timeout=5)


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (Linux /proc; no psutil needed)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    found = [int(c) for c in children]
    return found + [d for c in found for d in descendants(c)]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def event_photos(faces_dir: Path, count: int) -> list[tuple[str, bytes]]:
    """Real race photos, enlarged so one takes a noticeable moment to process; each one distinct."""
    base = Image.open(faces_dir / "groups" / "race_manuel_test1.jpg").convert("RGB")
    base = base.resize((base.width * 2, base.height * 2))
    photos = []
    for n in range(count):
        img = base.copy()
        ImageDraw.Draw(img).rectangle((0, 0, 40, 40 + n * 7), fill=(n * 30 % 255, 0, 0))  # distinct bytes
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        photos.append((f"race-{n}.jpg", buf.getvalue()))
    return photos


def upload(api: TestClient, faces_dir: Path, count: int) -> tuple[str, list[str]]:
    event_id = api.post("/api/v1/events", json={"name": "Faults"}).json()["id"]
    files = [("files", photo) for photo in event_photos(faces_dir, count)]
    response = api.post(f"/api/v1/events/{event_id}/photos", files=files)
    assert response.status_code == 202, response.text
    return event_id, [p["id"] for p in response.json()["photos"]]


class Db:
    def __init__(self, settings) -> None:
        self.engine = make_engine(settings.resolved_database_url)
        self.make_session = make_sessionmaker(self.engine)

    def photos(self) -> dict[str, Photo]:
        with self.make_session() as session:
            return {p.id: p for p in session.scalars(select(Photo))}

    def processing(self) -> list[Photo]:
        return [p for p in self.photos().values() if p.status == "processing"]

    def face_boxes(self) -> dict[str, list[tuple]]:
        with self.make_session() as session:
            boxes: dict[str, list[tuple]] = {}
            for face in session.scalars(select(Face)):
                boxes.setdefault(face.photo_id, []).append((face.x1, face.y1, face.x2, face.y2, face.model_id))
            return boxes

    def face_count(self) -> int:
        with self.make_session() as session:
            return session.scalar(select(func.count()).select_from(Face))


@pytest.fixture
def db(fault_settings) -> Iterator[Db]:
    handle = Db(fault_settings)
    yield handle
    handle.engine.dispose()


def wait_for(condition, what: str, timeout: float = 90, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}:\n{process.log_path.read_text()[-3000:]}")
        time.sleep(0.02)
    log = process.log_path.read_text()[-3000:] if process is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


def assert_each_done_once(db: Db, photo_ids: list[str]) -> None:
    photos = db.photos()
    assert {photos[i].status for i in photo_ids} == {"done"}, {i: (photos[i].status, photos[i].error) for i in photo_ids}
    boxes = db.face_boxes()
    for photo_id in photo_ids:
        found = boxes.get(photo_id, [])
        assert found, f"photo {photo_id} has no faces"  # the race photo has a clear face
        assert len(found) == len(set(found)), f"duplicate faces in {photo_id}: {found}"
    # every photo is the same scene, so a photo processed twice and stored twice would stand out
    assert len({len(boxes[i]) for i in photo_ids}) == 1, {i: len(boxes[i]) for i in photo_ids}


def test_pool_child_killed_mid_photo_is_redelivered(api, db, workers, faces_dir):
    """SIGKILL the process doing the work: acks_late + reject_on_worker_lost put the message back
    at once, the same task id takes back its own claim, and no sweeper is needed (none runs)."""
    event_id, photo_ids = upload(api, faces_dir, 3)
    worker = workers(beat=False)
    claimed = wait_for(db.processing, "a photo in processing", process=worker)[0]
    children = descendants(worker.pid)
    assert len(children) == 1, children  # --concurrency=1 and no beat: the one pool process
    os.kill(children[0], signal.SIGKILL)

    wait_until_processed(api, event_id, len(photo_ids), timeout=120)
    assert_each_done_once(db, photo_ids)
    photo = db.photos()[claimed.id]
    # attempts > 1 shows the photo really was cut off mid-work (else it finished before the kill)
    if photo.attempts == 1:
        pytest.xfail("the photo finished between our look and the kill; nothing was interrupted")
    assert photo.claimed_by is None and worker.poll() is None  # the worker survived its child


def test_whole_worker_killed_mid_photo_is_swept(api, db, workers, faces_dir):
    """SIGKILL the whole worker: its message stays unacknowledged in Redis (visibility timeout:
    an hour), so the sweeper in a new worker re-queues the stale claim after STALE_AFTER_S."""
    event_id, photo_ids = upload(api, faces_dir, 2)
    first = workers(beat=False)
    claimed = wait_for(db.processing, "a photo in processing", process=first)[0]
    for pid in [first.pid, *descendants(first.pid)]:  # parent first, so it cannot re-queue anything
        _kill(pid)
    first.wait()
    stuck = db.photos()[claimed.id]
    if stuck.status != "processing":
        pytest.xfail("the photo finished between our look and the kill; nothing was interrupted")

    second = workers(beat=True)
    wait_until_processed(api, event_id, len(photo_ids), timeout=120)
    assert_each_done_once(db, photo_ids)
    photo = db.photos()[claimed.id]
    assert photo.attempts >= 2 and photo.claimed_by is None  # claimed again by a new task, then done
    assert second.poll() is None


def test_redis_restart_loses_queue_but_not_photos(api, db, workers, private_redis, faces_dir):
    """Photos queued while no worker runs; Redis (no persistence) restarts and the queue is gone.
    Meanwhile the API says 503 and recovers alone; the sweeper re-queues every photo once."""
    event_id, photo_ids = upload(api, faces_dir, 3)
    assert private_redis.queue_length() == 3

    private_redis.stop()
    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["broker"].startswith("unavailable")
    refused = api.post(f"/api/v1/events/{event_id}/photos", files=[("files", event_photos(faces_dir, 4)[3])])
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "broker_unavailable" and refused.headers["Retry-After"]
    assert len(db.photos()) == 3  # nothing was accepted that could not be queued
    assert api.get(f"/api/v1/events/{event_id}").status_code == 200  # reads need no broker

    private_redis.start()
    assert private_redis.queue_length() == 0  # the restart really lost the messages
    assert api.get("/readyz").json()["broker"] == "ok"  # (the worker is not started yet: 503 for that)

    workers(beat=True)
    wait_until_processed(api, event_id, len(photo_ids), timeout=120)
    assert_each_done_once(db, photo_ids)
    assert {p.attempts for p in db.photos().values()} == {1}  # each processed exactly once


class TcpProxy:
    """A TCP forwarder we can cut: `down()` closes the port and every connection, like a database
    host going away; `up()` listens on the same port again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.port = upstream, free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            for sock in [self.listener, *self.sockets]:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.sockets, self.listener = [], None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_database_down_is_503_and_recovers(tmp_path, postgres_url):
    """PostgreSQL behind a proxy we cut: requests answer 503 problem+json, then work again alone."""
    from sqlalchemy.engine import make_url

    real = make_url(postgres_url)
    upgrade_to_head(postgres_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    proxy.up()
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = make_settings(tmp_path / "data", database_url=via_proxy)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as api:
        event_id = api.post("/api/v1/events", json={"name": "Db down"}).json()["id"]
        assert api.get(f"/api/v1/events/{event_id}").status_code == 200

        proxy.down()
        for response in (api.get(f"/api/v1/events/{event_id}"),
                         api.post(f"/api/v1/events/{event_id}/photos", files=[("files", ("a.jpg", b"x"))])):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "database_unavailable" and response.headers["Retry-After"]
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"].startswith("unavailable")

        proxy.up()
        assert api.get(f"/api/v1/events/{event_id}").status_code == 200  # pool_pre_ping reconnects
        assert api.get("/readyz").json()["database"] == "ok"
    proxy.down()
