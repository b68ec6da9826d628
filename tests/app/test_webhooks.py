"""Webhooks against a real HTTP receiver on loopback that checks the signature: delivery, a
receiver that is down and comes back, no duplicates, private addresses refused, and the path
from real photos and a real selfie to `runner.matched` and `event.processed`."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from app.db import WebhookDelivery, WebhookEvent
from app.db.session import unit_of_work
from app.main import create_app
from app.services import webhooks
from tests.app.test_matching import EVENT_PHOTOS, InlineSender, World
from tests.conftest import RecordingSender, free_port, migrated_settings, new_api_key
from worker.dispatch import DELIVER_WEBHOOK


class Receiver:
    """An HTTP server on a loopback port that verifies Finishline-Signature; `stop`/`start` make it
    down and up on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secret = ""
        self.received: list[dict] = []  # bodies with a valid signature
        self.bad_signatures = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                parts = dict(p.split("=", 1) for p in self.headers["Finishline-Signature"].split(","))
                expected = hmac.new(receiver.secret.encode(), parts["t"].encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
                fresh = abs(time.time() - int(parts["t"])) < 300
                if hmac.compare_digest(expected, parts["v1"]) and fresh:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                else:
                    receiver.bad_signatures += 1
                    self.send_response(400)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/finishline"


@pytest.fixture
def receiver():
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def api(tmp_path):
    settings = migrated_settings(tmp_path / "data", webhook_allow_private=True)
    app = create_app(settings)
    app.state.sender = RecordingSender()
    with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
        yield client


def subscribe(client, receiver: Receiver, events=("runner.matched", "event.processed")) -> dict:
    created = client.post("/api/v1/webhooks", json={"url": receiver.url, "events": list(events)})
    assert created.status_code == 201, created.text
    receiver.secret = created.json()["secret"]
    return created.json()


def queued(client) -> list[str]:
    """Webhook events whose DELIVER_WEBHOOK task was sent (after commit), taken from the sender."""
    sender = client.app.state.sender
    ids = [args[0] for name, args in sender.sent if name == DELIVER_WEBHOOK]
    sender.sent = [(n, a) for n, a in sender.sent if n != DELIVER_WEBHOOK]
    return ids


def deliver(client, event_id: str, *, last_try: bool = False, allow_private: bool = True) -> str:
    """What the worker's task does for one attempt."""
    return webhooks.deliver(client.app.state.make_session, event_id, allow_private=allow_private,
                            last_try=last_try)


def emit_runner_matched(client, runner_id: str) -> None:
    with unit_of_work(client.app.state.make_session, client.app.state.sender) as uow:
        webhooks.runners_matched(uow, [runner_id])


def a_runner(client) -> str:
    from app.db import Runner

    event = client.post("/api/v1/events", json={"name": "Hook 10k"}).json()
    with unit_of_work(client.app.state.make_session) as uow:
        runner = Runner(event_id=event["id"], name="Ada", email="ada@example.org")
        uow.session.add(runner)
    return runner.id


def test_create_list_delete_and_the_secret_shown_once(api, receiver):
    created = subscribe(api, receiver)
    assert set(created) == {"id", "url", "events", "secret", "created_at"} and created["secret"].startswith("whsec_")
    listed = api.get("/api/v1/webhooks").json()["items"]
    assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]
    assert api.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["photo.nope"]}).status_code == 422
    assert api.post("/api/v1/webhooks", json={"url": "ftp://x.example/", "events": ["runner.matched"]}) \
        .status_code == 422
    assert api.delete(f"/api/v1/webhooks/{created['id']}").status_code == 204
    assert api.delete(f"/api/v1/webhooks/{created['id']}").json()["code"] == "webhook_not_found"


def test_a_signed_delivery_arrives_once_with_a_stable_id(api, receiver):
    subscribe(api, receiver)
    runner_id = a_runner(api)
    emit_runner_matched(api, runner_id)
    [event_id] = queued(api)
    assert deliver(api, event_id) == "delivered"
    [body] = receiver.received
    assert set(body) == {"id", "type", "created_at", "data"} and body["type"] == "runner.matched"
    assert body["id"] == f"evt_{event_id}" and body["data"] == {
        "runner_id": runner_id, "event_id": body["data"]["event_id"], "matches": []}
    # The task delivered again (a redelivered message) or the sweeper: nothing is sent twice.
    assert deliver(api, event_id) == "skipped"
    with unit_of_work(api.app.state.make_session, api.app.state.sender) as uow:
        assert webhooks.sweep_stale_events(uow, stale_after=timedelta(0)) == []
    assert len(receiver.received) == 1 and receiver.bad_signatures == 0


def test_a_receiver_that_is_down_and_comes_back_gets_the_event_once(api, receiver):
    subscribe(api, receiver)
    emit_runner_matched(api, a_runner(api))
    [event_id] = queued(api)
    receiver.stop()  # connection refused
    for _ in range(2):
        with pytest.raises(webhooks.NotDelivered):
            deliver(api, event_id)  # Celery retries it with backoff
    receiver.start()
    assert deliver(api, event_id) == "delivered"
    assert deliver(api, event_id) == "skipped"
    assert len(receiver.received) == 1
    with unit_of_work(api.app.state.make_session) as uow:
        attempts = uow.session.query(WebhookDelivery).order_by(WebhookDelivery.attempt).all()
        assert [(a.attempt, a.succeeded, a.status_code) for a in attempts] == [
            (1, False, None), (2, False, None), (3, True, 204)]
        assert "ConnectError" in attempts[0].error
        assert uow.session.get(WebhookEvent, event_id).status == "delivered"


def test_a_lost_message_is_sent_again_by_the_sweeper_and_the_last_failure_is_recorded(api, receiver):
    subscribe(api, receiver)
    emit_runner_matched(api, a_runner(api))
    [event_id] = queued(api)  # ... and the message is lost
    with unit_of_work(api.app.state.make_session, api.app.state.sender) as uow:
        assert webhooks.sweep_stale_events(uow, stale_after=timedelta(0)) == [event_id]
    assert queued(api) == [event_id]
    receiver.stop()
    assert deliver(api, event_id, last_try=True) == "failed"
    with unit_of_work(api.app.state.make_session) as uow:
        assert uow.session.get(WebhookEvent, event_id).status == "failed"


def test_private_and_loopback_urls_are_refused_without_the_setting(tmp_path, receiver):
    settings = migrated_settings(tmp_path / "data")  # FINISHLINE_WEBHOOK_ALLOW_PRIVATE unset
    app = create_app(settings)
    app.state.sender = RecordingSender()
    with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
        for url in (receiver.url, "http://localhost:8000/x", "http://10.1.2.3/x", "http://[::1]:8080/x",
                    "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/x"):
            refused = client.post("/api/v1/webhooks", json={"url": url, "events": ["runner.matched"]})
            assert refused.status_code == 422 and refused.json()["code"] == "unsafe_url", (url, refused.text)
        unresolvable = client.post("/api/v1/webhooks", json={"url": "https://hooks.example.invalid/x",
                                                              "events": ["runner.matched"]})
        assert unresolvable.json()["code"] == "invalid_url"


def test_an_address_that_turns_private_after_creation_is_refused_at_send_time(api, receiver):
    """DNS rebinding: the host was checked when the webhook was created, and is again before each send."""
    subscribe(api, receiver)
    emit_runner_matched(api, a_runner(api))
    [event_id] = queued(api)
    with pytest.raises(webhooks.NotDelivered, match="unsafe_url"):
        deliver(api, event_id, allow_private=False)
    assert receiver.received == []


def test_real_photos_and_a_real_selfie_give_runner_matched_and_event_processed(tmp_path, faces_dir, receiver):
    settings = migrated_settings(tmp_path / "data", webhook_allow_private=True)
    app = create_app(settings)
    app.state.sender = InlineSender(app.state.make_session)  # MATCH_RUNNER runs inline; the rest recorded
    with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
        world = World(client, faces_dir)
        subscribe(client, receiver)
        event = world.event()
        photo_ids = world.upload(event["id"], EVENT_PHOTOS)
        world.process(list(photo_ids.values()))  # the real networks, as the worker runs them
        runner = world.enrol(event["id"], "paul_burrell")
        for event_id in queued(client):
            assert deliver(client, event_id) == "delivered"
    by_type: dict[str, list[dict]] = {}
    for body in receiver.received:
        by_type.setdefault(body["type"], []).append(body)
    [processed] = by_type["event.processed"]  # once, when the last of the five photos finished
    assert processed["data"] == {"event_id": event["id"], "photos_done": 5, "photos_failed": 0}
    [matched] = [b for b in by_type["runner.matched"] if b["data"]["runner_id"] == runner["id"]]
    matched_photos = {m["photo_id"] for m in matched["data"]["matches"]}
    assert matched_photos == {photo_ids["b.jpg"], photo_ids["e.jpg"]}
    assert matched["data"]["event_id"] == event["id"]
    assert len({b["id"] for b in receiver.received}) == len(receiver.received)  # no duplicates
    components = app.openapi()["components"]  # what /docs says a receiver gets (its "webhooks")
    for body in receiver.received:
        name = {"runner.matched": "RunnerMatched", "event.processed": "EventProcessed"}[body["type"]]
        validator = jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": components})
        assert validator.is_valid(body), (name, [e.message for e in validator.iter_errors(body)])


def test_deleting_the_race_event_deletes_its_webhook_events(api, receiver):
    subscribe(api, receiver)
    runner_id = a_runner(api)
    emit_runner_matched(api, runner_id)
    [event_id] = queued(api)
    with unit_of_work(api.app.state.make_session) as uow:
        race = uow.session.get(WebhookEvent, event_id).event_id
    assert api.delete(f"/api/v1/events/{race}").status_code == 204
    assert deliver(api, event_id) == "skipped" and receiver.received == []
