"""E-mailing runners their photos, against a real SMTP server (aiosmtpd) on loopback.

Rows are inserted directly (no CNNs needed): a runner, photos with thumbnails in the store, faces
and matches. Tasks queued by the API are run in-process with the real service, with Celery's eager
mode (retries included), or by a real `finishline worker` on the embedded broker.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.config import Settings
from app.db import DeliveredPhoto, Delivery, Event, Face, Match, Photo, PhotoStatus, Runner, utcnow
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.main import create_app
from app.services import notify as notify_service
from app.services.tokens import read_token
from app.storage import PhotoStore, make_store
from tests.conftest import (
    RecordingSender,
    free_port,
    make_settings,
    new_api_key,
    organisation_for_tests,
    service_env,
    start_process,
    stop_process,
)
from worker.celery_app import create_celery
from app.jobs import SEND_RUNNER_EMAIL

BASE_URL = "https://photos.example.org"


# --- a real SMTP server ------------------------------------------------------------------------

class Inbox:
    """aiosmtpd handler: keeps every accepted message; can refuse the next few with a 451."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse_next = 0
        self.hang_up_next = 0  # take the message, then drop the connection before answering

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.hang_up_next > 0:
            self.hang_up_next -= 1
            self.messages.append(message_from_bytes(envelope.content, policy=default_policy))
            server.transport.close()
            return "250 2.0.0 OK"
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 4.3.0 Try again later"
        message = message_from_bytes(envelope.content, policy=default_policy)
        message.envelope_to = list(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 2.0.0 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m.envelope_to == [address]]


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self, *, password: str | None = None) -> None:
        auth = {}
        if password:  # AUTH required; plain text is fine on loopback
            def check(server, session, envelope, mechanism, data) -> AuthResult:
                as_bytes = [v if isinstance(v, bytes) else v.encode() for v in (data.login, data.password)]
                ok = as_bytes == [b"finishline", password.encode()]
                return AuthResult(success=ok)

            auth = {"authenticator": check, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **auth)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> SmtpServer:
    server = SmtpServer()  # not started: tests that want it up call start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpServer) -> Settings:
    """Overrides conftest's: the same embedded setup, pointed at the test's SMTP server."""
    s = make_settings(tmp_path / "data", smtp_host="127.0.0.1", smtp_port=smtp.port,
                      smtp_from="Finishline <photos@example.org>", public_base_url=BASE_URL)
    s.data_dir.mkdir(parents=True)
    upgrade_to_head(s.resolved_database_url)
    return s


@pytest.fixture
def sessions(settings: Settings):
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def store(settings: Settings) -> PhotoStore:
    return make_store(settings.storage_url, settings.photos_dir)


# --- factories -----------------------------------------------------------------------------------

def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def make_event(sessions, *, name: str = "City Marathon 2026") -> Event:
    with unit_of_work(sessions) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name=name, slug=f"city-{time.time_ns()}",
                      match_threshold=0.5)
        uow.session.add(event)
    return event


def make_runner(sessions, *, event: Event, name: str = "Ada Lovelace", email: str = "ada@example.org") -> Runner:
    with unit_of_work(sessions) as uow:
        runner = Runner(event_id=event.id, name=name, email=email, model_id="fake")
        uow.session.add(runner)
    return runner


def make_photo(sessions, store: PhotoStore, *, event: Event, colour: tuple[int, int, int] = (200, 30, 30)) -> Photo:
    data = _jpeg(colour, (1200, 900))
    with unit_of_work(sessions) as uow:
        photo = Photo(event_id=event.id, filename=f"IMG_{time.time_ns()}.jpg",
                      sha256=hashlib.sha256(data + str(time.time_ns()).encode()).hexdigest(),
                      size_bytes=len(data), content_type="image/jpeg", storage_key="", status=PhotoStatus.done.value,
                      width=1200, height=900)
        uow.session.add(photo)
        uow.session.flush()
        photo.storage_key = f"events/{event.id}/originals/{photo.id}.jpg"
        photo.thumb_key = f"events/{event.id}/thumbs/{photo.id}.jpg"
        photo.preview_key = f"events/{event.id}/previews/{photo.id}.jpg"
    store.put_bytes(photo.storage_key, data)
    store.put_bytes(photo.preview_key, data)
    store.put_bytes(photo.thumb_key, _jpeg(colour))
    return photo


def make_match(sessions, *, runner: Runner, photo: Photo, similarity: float = 0.8) -> Match:
    with unit_of_work(sessions) as uow:
        face = Face(photo_id=photo.id, event_id=photo.event_id, x1=10, y1=10, x2=110, y2=110, score=0.99,
                    size_px=100, landmarks=[], embedding=b"\0" * 16, model_id="fake")
        uow.session.add(face)
        uow.session.get(Photo, photo.id).face_count += 1  # as photo_service.replace_faces keeps it
        uow.session.flush()
        match = Match(event_id=photo.event_id, runner_id=runner.id, photo_id=photo.id, face_id=face.id,
                      similarity=similarity)
        uow.session.add(match)
    return match


def runner_with_photos(sessions, store, *, event: Event, name: str, email: str, photos: int) -> tuple[Runner, list[Photo]]:
    runner = make_runner(sessions, event=event, name=name, email=email)
    made = [make_photo(sessions, store, event=event, colour=(40 * i % 255, 90, 160)) for i in range(photos)]
    for i, photo in enumerate(made):
        make_match(sessions, runner=runner, photo=photo, similarity=0.9 - i * 0.05)
    return runner, made


# --- helpers ---------------------------------------------------------------------------------------

def run_queued_tasks(client: TestClient, settings: Settings, sessions, store, *, task_id: str = "task") -> list[str]:
    """Runs the SEND_RUNNER_EMAIL tasks the API queued, in-process, with the real service."""
    sender: RecordingSender = client.app.state.sender
    outcomes = []
    for name, args in sender.sent:
        assert name == SEND_RUNNER_EMAIL
        outcomes.append(notify_service.send_delivery(settings, sessions, store, args[0],
                                                     task_id=f"{task_id}-{args[0]}", last_try=False))
    sender.sent.clear()
    return outcomes


def deliveries(sessions, runner_id: str | None = None) -> list[Delivery]:
    with unit_of_work(sessions) as uow:
        query = select(Delivery).order_by(Delivery.created_at)
        if runner_id:
            query = query.where(Delivery.runner_id == runner_id)
        return list(uow.session.scalars(query))


def delivered_photo_ids(sessions, runner_id: str) -> set[str]:
    with unit_of_work(sessions) as uow:
        return set(uow.session.scalars(select(DeliveredPhoto.photo_id).where(DeliveredPhoto.runner_id == runner_id)))


def token_of(url: str, prefix: str) -> str:
    path = urlsplit(url).path
    assert path.startswith(prefix), url
    return path.removeprefix(prefix).split("/")[0]


def links_in(text: str) -> list[str]:
    import re

    return re.findall(r"https?://[^\s\"<>]+", text)


# --- tests ---------------------------------------------------------------------------------------

def test_event_notify_sends_each_runner_with_new_photos_one_message(client, settings, sessions, store, smtp):
    smtp.start()
    event = make_event(sessions)
    ada, ada_photos = runner_with_photos(sessions, store, event=event, name="Ada Lovelace", email="ada@example.org", photos=5)
    grace, grace_photos = runner_with_photos(sessions, store, event=event, name="Grace Hopper",
                                             email="grace@example.org", photos=1)
    make_runner(sessions, event=event, name="No Photos", email="none@example.org")

    response = client.post(f"/api/v1/events/{event.id}/notify")
    assert response.status_code == 202 and response.json() == {"queued": 2}
    assert run_queued_tasks(client, settings, sessions, store) == ["sent", "sent"]

    assert len(smtp.inbox.messages) == 2 and not smtp.inbox.to("none@example.org")
    [message] = smtp.inbox.to("ada@example.org")
    [delivery] = deliveries(sessions, ada.id)
    assert delivery.status == "sent" and delivery.sent_at and delivery.attempts == 1
    assert message["Message-ID"] == delivery.message_id == f"<{delivery.id}@example.org>"
    assert message["To"].addresses[0].addr_spec == "ada@example.org" and message["From"] == settings.smtp_from
    assert "5 new photos" in message["Subject"] and event.name in message["Subject"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = message["List-Unsubscribe"].strip("<>")
    assert unsubscribe_url.startswith(f"{BASE_URL}/u/")
    assert read_token(settings.signing_key, "unsubscribe", token_of(unsubscribe_url, "/u/")) == ada.id

    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hi Ada" in text and "Hi Ada" in html and "5 new photos" in text
    gallery_url = next(u for u in links_in(text) if "/g/" in u)
    delete_url = next(u for u in links_in(text) if "/d/" in u)
    assert gallery_url in html and delete_url in html and unsubscribe_url in text
    assert read_token(settings.signing_key, "gallery", token_of(gallery_url, "/g/")) == ada.id
    assert read_token(settings.signing_key, "delete", token_of(delete_url, "/d/")) == ada.id

    # four inline thumbnails, of the best-matching photos, each referenced by the HTML
    images = [part for part in message.walk() if part.get_content_type() == "image/jpeg"]
    assert len(images) == 4
    assert [img.get_filename() for img in images] == [f"{p.id}.jpg" for p in ada_photos[:4]]
    for img in images:
        assert f"cid:{img['Content-ID'].strip('<>')}" in html
        assert Image.open(io.BytesIO(img.get_content())).size == (400, 300)

    page = client.get(urlsplit(gallery_url).path)  # the link opens Ada's gallery, all her photos
    assert page.status_code == 200
    assert all(p.id in page.text for p in ada_photos) and grace_photos[0].id not in page.text

    assert delivered_photo_ids(sessions, ada.id) == {p.id for p in ada_photos}
    assert len(delivered_photo_ids(sessions, grace.id)) == 1
    stats = client.get(f"/api/v1/events/{event.id}").json()["stats"]
    assert (stats["emails_sent"], stats["emails_queued"], stats["emails_failed"]) == (2, 0, 0)
    with unit_of_work(sessions) as uow:
        assert notify_service.last_email_status(uow, ada.id) == "sent"


def test_second_notify_sends_nothing_and_later_photos_alone(client, settings, sessions, store, smtp):
    smtp.start()
    event = make_event(sessions)
    ada, first = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=2)
    assert client.post(f"/api/v1/runners/{ada.id}/notify").json() == {"queued": 1}
    # a second notify before the worker ran: those photos are already on their way
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 0}
    run_queued_tasks(client, settings, sessions, store)
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 0}
    assert client.post(f"/api/v1/runners/{ada.id}/notify").json() == {"queued": 0}
    assert run_queued_tasks(client, settings, sessions, store) == []

    new_photo = make_photo(sessions, store, event=event, colour=(10, 200, 10))
    make_match(sessions, runner=ada, photo=new_photo, similarity=0.7)
    assert client.post(f"/api/v1/runners/{ada.id}/notify").json() == {"queued": 1}
    run_queued_tasks(client, settings, sessions, store)

    first_message, second_message = smtp.inbox.to("ada@example.org")
    assert "2 new photos" in first_message["Subject"]
    assert "1 new photo " in second_message["Subject"]
    assert "3 photos in all" in second_message.get_body(("plain",)).get_content()
    images = [p.get_filename() for p in second_message.walk() if p.get_content_type() == "image/jpeg"]
    assert images == [f"{new_photo.id}.jpg"]
    assert delivered_photo_ids(sessions, ada.id) == {p.id for p in first} | {new_photo.id}
    gallery_url = next(u for u in links_in(second_message.get_body(("plain",)).get_content()) if "/g/" in u)
    page = client.get(urlsplit(gallery_url).path)  # the gallery still shows every photo
    assert page.status_code == 200 and all(p.id in page.text for p in [*first, new_photo])


def test_one_click_unsubscribe(client, settings, sessions, store, smtp):
    smtp.start()
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=1)
    url = notify_service.runner_links(settings, ada.id).unsubscribe
    path = urlsplit(url).path

    page = client.get(path)  # link scanners GET: that shows a button and changes nothing
    assert page.status_code == 200 and "<form" in page.text
    with unit_of_work(sessions) as uow:
        assert uow.session.get(Runner, ada.id).unsubscribed_at is None

    # RFC 8058: a POST with this body and no credentials at all
    done = client.post(path, content="List-Unsubscribe=One-Click", headers={
        "Authorization": "", "Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # idempotent
    with unit_of_work(sessions) as uow:
        assert uow.session.get(Runner, ada.id).unsubscribed_at is not None

    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 0}
    assert client.post(f"/api/v1/runners/{ada.id}/notify").json() == {"queued": 0}
    assert smtp.inbox.messages == []
    gallery_token = token_of(notify_service.runner_links(settings, ada.id).gallery, "/g/")
    assert client.post(f"/u/{gallery_token}").status_code == 404  # a gallery link is no unsubscribe link
    assert client.post("/u/forged").status_code == 404


def test_unsubscribed_or_deleted_after_queueing_gets_nothing(client, settings, sessions, store, smtp):
    smtp.start()
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=2)
    bob, _ = runner_with_photos(sessions, store, event=event, name="Bob", email="bob@example.org", photos=1)
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 2}
    client.post(urlsplit(notify_service.runner_links(settings, ada.id).unsubscribe).path)
    assert client.delete(f"/api/v1/runners/{bob.id}").status_code == 204  # his delivery goes with him

    assert sorted(run_queued_tasks(client, settings, sessions, store)) == ["cancelled", "gone"]
    assert smtp.inbox.messages == []
    assert [d.status for d in deliveries(sessions)] == ["cancelled"]


def test_racing_notifies_announce_each_photo_once(client, settings, sessions, store, smtp):
    """Two deliveries for the same photos (as two simultaneous notify requests could create):
    whichever worker claims first sends; the other finds nothing left."""
    smtp.start()
    event = make_event(sessions)
    ada, photos = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=2)
    with unit_of_work(sessions) as uow:
        twins = [Delivery(event_id=event.id, runner_id=ada.id, photo_ids=[p.id for p in photos]) for _ in range(2)]
        uow.session.add_all(twins)
    outcomes = [notify_service.send_delivery(settings, sessions, store, d.id, task_id=f"t{i}", last_try=False)
                for i, d in enumerate(twins)]
    assert outcomes == ["sent", "cancelled"]
    assert len(smtp.inbox.messages) == 1


def test_worker_lost_mid_send_is_never_resent(client, settings, sessions, store, smtp, monkeypatch):
    smtp.start()
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=2)
    assert client.post(f"/api/v1/runners/{ada.id}/notify").json() == {"queued": 1}
    [(_, (delivery_id,))] = client.app.state.sender.sent

    def killed(*_args, **_kwargs):  # the server accepted; the worker dies before recording it
        raise SystemExit("worker killed")

    monkeypatch.setattr(notify_service, "_record_sent", killed)
    with pytest.raises(SystemExit):
        notify_service.send_delivery(settings, sessions, store, delivery_id, task_id="t1", last_try=False)
    monkeypatch.undo()
    assert len(smtp.inbox.messages) == 1 and deliveries(sessions)[0].status == "sending"

    # the broker redelivers the same task: it cannot know what the server did, so it sends nothing
    outcome = notify_service.send_delivery(settings, sessions, store, delivery_id, task_id="t1", last_try=False)
    assert outcome == "uncertain" and len(smtp.inbox.messages) == 1
    # ... and a later notify does not re-announce those photos either
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 0}
    stats = client.get(f"/api/v1/events/{event.id}").json()["stats"]
    assert stats["emails_uncertain"] == 1 and stats["emails_sent"] == 0


def test_connection_lost_during_data_is_uncertain_not_resent(client, settings, sessions, store, smtp):
    smtp.start()
    smtp.inbox.hang_up_next = 1
    event = make_event(sessions)
    runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=1)
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
    assert run_queued_tasks(client, settings, sessions, store) == ["uncertain"]
    [delivery] = deliveries(sessions)
    assert delivery.status == "uncertain" and "DATA" in delivery.error
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 0}
    assert len(smtp.inbox.messages) == 1


def test_sweeper_requeues_lost_messages_and_settles_dead_sends(settings, sessions):
    event = make_event(sessions)
    ada = make_runner(sessions, event=event)
    long_ago = utcnow().replace(year=2020)
    with unit_of_work(sessions) as uow:
        lost = Delivery(event_id=event.id, runner_id=ada.id, photo_ids=[], queued_at=long_ago)
        dead = Delivery(event_id=event.id, runner_id=ada.id, photo_ids=[], status="sending",
                        claimed_at=long_ago, claimed_by="gone")
        live = Delivery(event_id=event.id, runner_id=ada.id, photo_ids=[], status="sending",
                        claimed_at=utcnow(), claimed_by="busy")
        fresh = Delivery(event_id=event.id, runner_id=ada.id, photo_ids=[])
        uow.session.add_all([lost, dead, live, fresh])
    sender = RecordingSender()
    with unit_of_work(sessions, sender) as uow:
        from datetime import timedelta

        result = notify_service.sweep_stale_deliveries(uow, stale_after=timedelta(seconds=600))
    assert result.requeued == [lost.id] and result.uncertain == [dead.id]
    assert sender.sent == [(SEND_RUNNER_EMAIL, (lost.id,))]
    # a live claim by another worker is left alone by a duplicate task message
    assert notify_service.send_delivery(settings, sessions, None, live.id, task_id="other",
                                        last_try=False) == "in_progress"


@pytest.fixture
def eager_celery(settings, monkeypatch):
    """The real task, run by Celery in eager mode: retries happen at once, in this process."""
    import worker.context
    import worker.tasks  # noqa: F401 - registers the tasks

    monkeypatch.setattr(worker.context, "_context", None)  # a worker context for these settings
    celery = create_celery(settings)
    celery.conf.task_always_eager = True
    yield celery.tasks[SEND_RUNNER_EMAIL]
    if worker.context._context is not None:
        worker.context._context.make_session.kw["bind"].dispose()


def test_refusals_are_retried_until_accepted_once(client, settings, sessions, store, smtp, eager_celery):
    smtp.start()
    smtp.inbox.refuse_next = 3  # 451 three times, then accept
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=1)
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
    [delivery] = deliveries(sessions)

    result = eager_celery.apply(args=[delivery.id])
    assert result.get() == "sent"
    assert len(smtp.inbox.messages) == 1
    [delivery] = deliveries(sessions)
    assert delivery.status == "sent" and delivery.attempts == 4 and delivery.error is None


def test_smtp_down_through_the_last_retry_is_a_visible_failure(client, settings, sessions, store, smtp, eager_celery):
    # the server is never started: every connection is refused
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=2)
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
    [delivery] = deliveries(sessions)

    assert eager_celery.apply(args=[delivery.id]).get() == "failed"
    client.app.state.sender.sent.clear()  # that task has run
    [delivery] = deliveries(sessions)
    assert delivery.status == "failed" and f"127.0.0.1:{smtp.port}" in delivery.error
    assert delivery.attempts == eager_celery.max_retries + 1
    assert delivered_photo_ids(sessions, ada.id) == set()
    stats = client.get(f"/api/v1/events/{event.id}").json()["stats"]
    assert stats["emails_failed"] == 1 and stats["emails_sent"] == 0
    with unit_of_work(sessions) as uow:
        assert notify_service.last_email_status(uow, ada.id) == "failed"

    # nothing was lost: once the server is back, a new notify sends the same photos
    smtp.start()
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
    assert run_queued_tasks(client, settings, sessions, store) == ["sent"]
    assert "2 new photos" in smtp.inbox.messages[0]["Subject"]


def test_without_smtp_host_messages_go_to_the_outbox(settings, sessions, store, smtp, caplog):
    settings = settings.model_copy(update={"smtp_host": None})
    app = create_app(settings)
    app.state.sender = RecordingSender()
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=1)
    with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
        assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
        with caplog.at_level(logging.INFO, logger="app.services.email"):
            assert run_queued_tasks(client, settings, sessions, store) == ["sent"]

    [delivery] = deliveries(sessions)
    eml = settings.outbox_dir / f"{delivery.id}.eml"
    assert str(eml.resolve()) in caplog.text
    message = message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert message["Message-ID"] == delivery.message_id and message["List-Unsubscribe-Post"]
    assert smtp.inbox.messages == []


def test_smtp_login_when_configured(client, settings, sessions, store, smtp):
    smtp.start(password="s3cret-pass")
    event = make_event(sessions)
    runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=1)
    client.post(f"/api/v1/events/{event.id}/notify")
    [(_, (delivery_id,))] = client.app.state.sender.sent
    # (a wrong password is not tried here: aiosmtpd answers a failed AUTH only after a long delay)
    right = settings.model_copy(update={"smtp_user": "finishline", "smtp_password": "s3cret-pass"})
    assert notify_service.send_delivery(right, sessions, store, delivery_id, task_id="t", last_try=False) == "sent"
    assert len(smtp.inbox.messages) == 1


def test_notify_needs_a_key_and_known_ids(client, settings):
    assert client.post("/api/v1/events/nope/notify", headers={"Authorization": ""}).status_code == 401
    assert client.post("/api/v1/runners/nope/notify", headers={"Authorization": ""}).status_code == 401
    assert client.post("/api/v1/events/nope/notify").json()["code"] == "event_not_found"
    assert client.post("/api/v1/runners/nope/notify").json()["code"] == "runner_not_found"


def _wait_for(predicate, what: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen in {timeout}s; worker log:\n{log_path.read_text()[-3000:]}")


def test_real_worker_smtp_down_then_back_delivers_each_message_once(settings, sessions, store, smtp, tmp_path):
    event = make_event(sessions)
    runners = [runner_with_photos(sessions, store, event=event, name=f"Runner {i}", email=f"r{i}@example.org",
                                  photos=2)[0] for i in range(3)]
    env = service_env(settings) | {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port),
                                   "SMTP_FROM": settings.smtp_from, "PUBLIC_BASE_URL": BASE_URL}
    log_path = tmp_path / "worker.log"
    worker = start_process(["worker", "--concurrency=2"], env, log_path)
    try:
        app = create_app(settings)  # the real sender: tasks go through the embedded broker
        with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
            assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 3}

            def all_tried_and_refused() -> bool:
                found = deliveries(sessions)
                return all(d.attempts >= 1 and d.error and d.status == "queued" for d in found)

            _wait_for(all_tried_and_refused, "first attempts against the dead server", log_path)
            assert client.get(f"/api/v1/events/{event.id}").json()["stats"]["emails_queued"] == 3
            smtp.start()
            _wait_for(lambda: all(d.status == "sent" for d in deliveries(sessions)), "delivery after recovery",
                      log_path)
            assert client.get(f"/api/v1/events/{event.id}").json()["stats"]["emails_sent"] == 3
    finally:
        stop_process(worker)
    assert sorted(m.envelope_to[0] for m in smtp.inbox.messages) == [f"r{i}@example.org" for i in range(3)]
    with unit_of_work(sessions) as uow:
        assert uow.session.scalar(select(func.count()).select_from(DeliveredPhoto)) == 6
    assert all(len(delivered_photo_ids(sessions, r.id)) == 2 for r in runners)


@pytest.mark.postgres
def test_notify_and_send_on_postgres(postgres_url, tmp_path, smtp):
    """The same queries on PostgreSQL: JSON photo lists, the runner row lock, racing deliveries."""
    smtp.start()
    settings = make_settings(tmp_path / "data", database_url=postgres_url, smtp_host="127.0.0.1",
                             smtp_port=smtp.port, public_base_url=BASE_URL)
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(postgres_url)
    engine = make_engine(postgres_url)
    sessions, store = make_sessionmaker(engine), make_store(None, settings.photos_dir)
    try:
        event = make_event(sessions)
        ada, photos = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=3)
        sender = RecordingSender()
        with unit_of_work(sessions, sender) as uow:
            assert notify_service.notify_event(uow, event.id) == 1
        with unit_of_work(sessions) as uow:  # a racing twin with the same photos
            twin = Delivery(event_id=event.id, runner_id=ada.id, photo_ids=[p.id for p in photos])
            uow.session.add(twin)
        [(_, (delivery_id,))] = sender.sent
        outcomes = [notify_service.send_delivery(settings, sessions, store, d, task_id=f"pg-{d}", last_try=False)
                    for d in (delivery_id, twin.id)]
        assert outcomes == ["sent", "cancelled"] and len(smtp.inbox.messages) == 1
        assert delivered_photo_ids(sessions, ada.id) == {p.id for p in photos}
        with unit_of_work(sessions, RecordingSender()) as uow:
            assert notify_service.notify_runner(uow, ada.id) == 0
    finally:
        engine.dispose()
