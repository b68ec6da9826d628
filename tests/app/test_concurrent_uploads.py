"""Issue 12.2: no request holds a database connection while it reads a body or runs a network,
so 100 concurrent uploads against a real uvicorn server all succeed (SQLite and PostgreSQL), and
a pool that is exhausted anyway answers 503 with Retry-After, never 500."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.db import Photo
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from tests.conftest import (
    free_port,
    make_settings,
    migrated_settings,
    new_api_key,
    service_env,
    start_process,
    stop_process,
    wait_for_http,
)

CONCURRENT = 100


def small_jpeg(n: int) -> bytes:
    """A distinct 64x48 JPEG per n (distinct bytes: no duplicates)."""
    image = Image.new("RGB", (64, 48), (n % 256, (n * 37) % 256, (n * 91) % 256))
    image.putpixel((n % 64, (n // 64) % 48), (255 - n % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api_server(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        settings = make_settings(tmp_path / "data", database_url=url)
        settings.data_dir.mkdir(parents=True)
        upgrade_to_head(url)
    else:
        settings = migrated_settings(tmp_path / "data")
    key = new_api_key(settings)
    port = free_port()
    log_path = tmp_path / "api.log"
    process = start_process(["api", "--port", str(port)], service_env(settings), log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", process, log_path)
        yield base, key, settings, log_path
    finally:
        stop_process(process)


def test_100_concurrent_uploads_all_succeed(api_server):
    base, key, settings, log_path = api_server
    headers = {"Authorization": f"Bearer {key}"}
    event = httpx.post(f"{base}/api/v1/events", json={"name": "Rush hour"}, headers=headers).json()
    start = threading.Barrier(CONCURRENT)

    def upload(n: int) -> tuple[int, dict]:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            start.wait()  # all at once
            response = client.post(f"/api/v1/events/{event['id']}/photos",
                                   files=[("files", (f"{n}.jpg", small_jpeg(n), "image/jpeg"))])
            return response.status_code, response.json()

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(upload, range(CONCURRENT)))
    failures = [(status, body) for status, body in answers if status != 202]
    assert not failures, f"{len(failures)} of {CONCURRENT} failed, e.g. {failures[:3]}\n{log_path.read_text()[-2000:]}"
    assert all(len(body["photos"]) == 1 and not body["rejected"] for _, body in answers)
    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Photo).where(Photo.event_id == event["id"])) \
            == CONCURRENT
    engine.dispose()


def test_an_exhausted_pool_answers_503_with_retry_after(tmp_path):
    settings = migrated_settings(tmp_path / "data", db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.2)
    key = new_api_key(settings)
    app = create_app(settings)
    engine = app.state.make_session.kw["bind"]
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        with engine.connect():  # the only connection is taken
            busy = client.get("/api/v1/events/anything")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert busy.json()["code"] == "overloaded"
        assert client.get("/api/v1/events/anything").status_code == 404  # and it recovers


def test_selfie_enrolment_holds_no_connection_while_the_cnn_runs(client, faces_dir, monkeypatch):
    from app.services import runners as runner_service
    from tests.images import identity_photo

    pool = client.app.state.make_session.kw["bind"].pool
    real_analyse = runner_service.analyse_selfie
    held_during_cnn: list[int] = []

    def analyse(*args, **kwargs):
        held_during_cnn.append(pool.checkedout())
        return real_analyse(*args, **kwargs)

    monkeypatch.setattr(runner_service, "analyse_selfie", analyse)
    event = client.post("/api/v1/events", json={"name": "Selfies"}).json()
    selfie = identity_photo(faces_dir, "andy_roddick", 1).read_bytes()
    api = client.post(f"/api/v1/events/{event['id']}/runners",
                      data={"name": "Andy", "email": "andy@example.org", "consent": "true"},
                      files={"selfie": ("me.jpg", selfie, "image/jpeg")})
    assert api.status_code == 201, api.text
    page = client.post(f"/e/{event['slug']}", data={"name": "Andy", "email": "andy2@example.org", "consent": "on"},
                       files={"selfie": ("me.jpg", selfie, "image/jpeg")})
    assert page.status_code == 200, page.text
    assert held_during_cnn == [0, 0]
