"""The production shape: API + a real Celery worker on real Redis, with PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.db.migrate import upgrade_to_head
from app.main import create_app
from tests.conftest import make_settings, new_api_key, service_env, start_process, stop_process, \
    wait_until_processed
from tests.images import as_png, identity_photo, make_zip

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def stack(tmp_path, postgres_url, redis_url):
    # two photos per task: the real worker also takes the batched (GPU) shape of task
    settings = make_settings(tmp_path / "data", database_url=postgres_url, redis_url=redis_url, photos_per_task=2)
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(postgres_url)
    log_path = tmp_path / "worker.log"
    worker = start_process(["worker", "--concurrency", "1"], service_env(settings), log_path)
    app = create_app(settings)
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
            yield client, worker, log_path
    finally:
        stop_process(worker)


def test_photos_are_processed_by_a_celery_worker_over_redis(stack, faces_dir):
    client, worker, log_path = stack
    event = client.post("/api/v1/events", json={"name": "Production shape"}).json()
    group = faces_dir / "groups" / "linzaer_9.jpg"  # 8 faces
    archive = make_zip({"finish/1.png": as_png(identity_photo(faces_dir, "john_lennon", 1)),
                        "finish/2.jpg": identity_photo(faces_dir, "john_lennon", 2).read_bytes()})
    response = client.post(f"/api/v1/events/{event['id']}/photos",
                           files=[("files", (group.name, group.read_bytes())), ("files", ("f.zip", archive))])
    assert response.status_code == 202
    assert len(response.json()["photos"]) == 3
    try:
        final = wait_until_processed(client, event["id"], expected=3, timeout=240)
    except AssertionError:
        raise AssertionError(log_path.read_text()[-4000:])
    assert final["stats"]["photos_done"] == 3, final["stats"]
    photos = client.get(f"/api/v1/events/{event['id']}/photos", params={"status": "done"}).json()["items"]
    group_faces = next(p for p in photos if p["filename"] == group.name)["faces"]
    assert 6 <= len(group_faces) <= 10
    assert all(len(p["faces"]) >= 1 for p in photos)
    assert client.get("/readyz").status_code == 200
