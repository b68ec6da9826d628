from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


def test_healthz_needs_no_key(settings):
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer fl_abc_def", "Basic Zm9vOmJhcg=="])
def test_missing_or_wrong_key_is_401_problem_json(settings, header):
    headers = {"Authorization": header} if header else {}
    with TestClient(create_app(settings)) as client:
        response = client.post("/api/v1/events", json={"name": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "unauthorized" and body["status"] == 401 and body["title"] and body["detail"]


def test_tampered_key_is_refused(client):
    good = client.headers["Authorization"]
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    assert client.get("/api/v1/events/x", headers={"Authorization": tampered}).status_code == 401


def test_event_create_and_read_with_stats(client, settings):
    created = client.post("/api/v1/events", json={"name": "Berlin Marathon 2026", "starts_on": "2026-09-27"})
    assert created.status_code == 201
    event = created.json()
    assert event["slug"].startswith("berlin-marathon-2026-")
    assert event["match_threshold"] == settings.default_match_threshold
    assert event["stats"] == {"photos": 0, "photos_pending": 0, "photos_processing": 0, "photos_done": 0,
                              "photos_failed": 0, "faces": 0, "runners": 0, "matches": 0,
                              "emails_queued": 0, "emails_sent": 0, "emails_failed": 0, "emails_uncertain": 0,
                              "rematch_total": 0, "rematch_done": 0}
    again = client.get(f"/api/v1/events/{event['id']}").json()
    assert again["id"] == event["id"] and again["created_at"] == event["created_at"]


def test_event_validation_and_unknown_ids(client):
    bad = client.post("/api/v1/events", json={"name": "", "match_threshold": 3})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    missing = client.get("/api/v1/events/does-not-exist")
    assert missing.status_code == 404 and missing.json()["code"] == "event_not_found"
    assert client.get("/api/v1/photos/nope").json()["code"] == "photo_not_found"


def test_placeholder_secret_is_refused(tmp_path):
    with pytest.raises(ValueError, match="placeholder"):
        Settings(data_dir=tmp_path, secret_key="changeme")


def test_embedded_secret_is_created_once(tmp_path):
    first = Settings(data_dir=tmp_path).signing_key
    assert len(first) >= 32 and Settings(data_dir=tmp_path).signing_key == first
