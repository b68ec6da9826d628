"""The bulk upload's body is parsed as it arrives (app/api/upload_body.py): each file goes straight
into staging, never through a spooled copy in the system temp dir; a body that is not a complete
multipart message is a 422 `malformed_upload` that stores nothing and leaves nothing staged."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import RecordingSender, api_client, live_server, migrated_settings, new_api_key
from tests.images import noise_jpeg
from tests.multipart_body import BOUNDARY, end, part

MB = 2**20


@pytest.fixture
def settings(tmp_path: Path):
    return migrated_settings(tmp_path / "data", max_file_bytes=4 * MB, max_files_per_request=5)


@pytest.fixture
def api(settings):
    with api_client(settings) as client:
        yield client


@pytest.fixture
def event_id(api) -> str:
    return api.post("/api/v1/events", json={"name": "Streamed"}).json()["id"]


def post_raw(api: TestClient, event_id: str, body: bytes, content_type: str | None = None):
    return api.post(f"/api/v1/events/{event_id}/photos", content=body,
                    headers={"Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}"})


def staged_files(settings) -> list[Path]:
    return [p for p in (settings.data_dir / "tmp").rglob("*") if p.is_file()]


def photo_count(api: TestClient, event_id: str) -> int:
    return api.get(f"/api/v1/events/{event_id}").json()["stats"]["photos"]


def test_an_upload_needs_no_room_in_the_system_temp_dir(api, event_id, monkeypatch, tmp_path):
    """Starlette's request.form() spools every file over 1 MiB to tempfile.gettempdir() before the
    handler runs: a second copy of the whole body. The upload must not need it at all."""
    photo = noise_jpeg(seed=1, size=(1400, 1000))
    assert len(photo) > MB  # past the size Starlette's spool keeps in memory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    response = post_raw(api, event_id, part("big.jpg", photo) + end())
    assert response.status_code == 202, response.text
    assert [p["filename"] for p in response.json()["photos"]] == ["big.jpg"]


def test_files_keep_their_order_and_limits_while_streamed(api, event_id, settings):
    too_big = b"\xff\xd8\xff" + bytes(settings.max_file_bytes)
    body = (part("a.jpg", noise_jpeg(seed=2)) + part("huge.jpg", too_big) + part("notes.txt", b"hello")
            + part("ignored.jpg", noise_jpeg(seed=3), field="other") + part("b.jpg", noise_jpeg(seed=4)) + end())
    response = post_raw(api, event_id, body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert [p["filename"] for p in answer["photos"]] == ["a.jpg", "b.jpg"]
    assert [(r["filename"], r["code"]) for r in answer["rejected"]] == [
        ("huge.jpg", "file_too_large"), ("notes.txt", "unsupported_type")]
    assert answer["rejected"][0]["detail"] == f"larger than {settings.max_file_bytes} bytes"
    assert staged_files(settings) == []


@pytest.mark.parametrize("body, content_type", [
    pytest.param(part("a.jpg", noise_jpeg(seed=5)), None, id="cut-off-before-the-closing-boundary"),
    pytest.param(part("a.jpg", noise_jpeg(seed=5))[:3000], None, id="cut-off-mid-part"),
    pytest.param(part("a.jpg", noise_jpeg(seed=5)) + end(), "multipart/form-data; boundary=another-one",
                 id="wrong-boundary"),
    pytest.param(part("a.jpg", noise_jpeg(seed=5)) + end(), "multipart/form-data", id="no-boundary"),
    pytest.param(b"this is not multipart at all", None, id="garbage"),
    pytest.param(f"--{BOUNDARY}\r\nContent-Disposition: form-data; filename=\"a.jpg\"\r\n\r\nx\r\n".encode() + end(),
                 None, id="part-without-a-name"),
    pytest.param(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
                 f"X-Junk: {'y' * 100_000}\r\n\r\nx\r\n".encode() + end(), None, id="huge-part-header"),
])
def test_a_malformed_body_is_422_and_stores_nothing(api, event_id, settings, body, content_type):
    response = post_raw(api, event_id, part("first.jpg", noise_jpeg(seed=6)) + body, content_type)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "malformed_upload" and response.json()["detail"]
    assert photo_count(api, event_id) == 0  # not even the complete file before the broken one
    assert staged_files(settings) == []


def test_too_many_files_is_413_and_leaves_nothing_staged(api, event_id, settings):
    body = b"".join(part(f"{n}.jpg", noise_jpeg(seed=n)) for n in range(settings.max_files_per_request + 1))
    response = post_raw(api, event_id, body + end())
    assert response.status_code == 413 and response.json()["code"] == "too_many_files"
    assert response.json()["detail"] == "Too many files. Maximum number of files is 5. (at most 5 per request)"
    assert photo_count(api, event_id) == 0
    assert staged_files(settings) == []


def test_no_file_part_is_422_no_files(api, event_id):
    plain = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"\r\n\r\njust text\r\n".encode()
    for body, content_type in ((plain + end(), None), (b"{}", "application/json")):
        response = post_raw(api, event_id, body, content_type)
        assert response.status_code == 422 and response.json()["code"] == "no_files", response.text


def test_too_many_plain_fields_is_422(api, event_id):
    fields = b"".join(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f{n}\"\r\n\r\nx\r\n".encode()
                      for n in range(101))
    response = post_raw(api, event_id, fields + part("a.jpg", noise_jpeg(seed=7)) + end())
    assert response.status_code == 422 and response.json()["code"] == "malformed_upload"
    assert photo_count(api, event_id) == 0


def test_a_client_that_disconnects_mid_part_leaves_nothing_staged(settings):
    """Over a real socket: the part is being written to staging when the client goes; its file is
    removed, nothing is stored, and the server carries on serving."""
    app = create_app(settings)
    app.state.sender = RecordingSender()
    key = new_api_key(settings)
    with live_server(app) as base, TestClient(app, headers={"Authorization": f"Bearer {key}"}) as api:
        event_id = api.post("/api/v1/events", json={"name": "Gone"}).json()["id"]
        head = part("a.jpg", noise_jpeg(seed=8, size=(1400, 1000)))
        port = int(base.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall((f"POST /api/v1/events/{event_id}/photos HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {key}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                      f"Content-Length: {len(head) + len(end())}\r\n\r\n").encode() + head[:len(head) // 2])
        _wait_for(lambda: staged_files(settings), "the part to reach staging while it streams")
        sock.close()
        _wait_for(lambda: not staged_files(settings), "the staged part to be removed after the disconnect")
        assert photo_count(api, event_id) == 0
        import httpx

        answer = httpx.post(f"{base}/api/v1/events/{event_id}/photos", headers={"Authorization": f"Bearer {key}"},
                            files=[("files", ("b.jpg", noise_jpeg(seed=9)))])
        assert answer.status_code == 202, answer.text


def _wait_for(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
