"""E-mail faults of issue 12 (points 5 and 6), against a real SMTP server (aiosmtpd) on loopback:
names with control characters, a message that cannot be built, the List-Unsubscribe bytes on the
wire, and an SMTP outage longer than the sweeper's stale_after."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from app.db import Delivery, Event, utcnow
from app.db.session import unit_of_work
from app.services import notify as notify_service
from app.services.email import NotSent
from tests.app.test_notify import (  # noqa: F401 - fixtures
    Inbox,
    deliveries,
    delivered_photo_ids,
    make_event,
    run_queued_tasks,
    runner_with_photos,
    sessions,
    settings,
    smtp,
    store,
)
from tests.conftest import RecordingSender
from worker.dispatch import SEND_RUNNER_EMAIL

BAD_TEXT = ["City\nMarathon", "City\rMarathon", "Tab\there", "NUL\x00", "DEL\x7f", "C1\x85", "Line\u2028sep",
            "Para\u2029sep"]


class RawInbox(Inbox):
    """Also keeps the message bytes exactly as they crossed the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.raw.append(envelope.original_content)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_control_characters_are_refused_in_every_text_field(client, bad):
    assert client.post("/api/v1/events", json={"name": bad}).status_code == 422
    assert client.post("/api/v1/keys", json={"name": bad, "scope": "partner"}).status_code == 422
    event = client.post("/api/v1/events", json={"name": "Fine"}).json()
    assert client.patch(f"/api/v1/events/{event['id']}", json={"name": bad}).status_code == 422
    for field in ("name", "bib"):
        form = {"name": "Ada", "email": "ada@example.org", "consent": "true", field: f"x{bad}x"}
        answer = client.post(f"/api/v1/events/{event['id']}/runners", data=form,
                             files={"selfie": ("s.jpg", b"\xff\xd8\xff not really", "image/jpeg")})
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error", (field, answer.text)
        page = client.post(f"/e/{event['slug']}", data=form,
                           files={"selfie": ("s.jpg", b"\xff\xd8\xff not really", "image/jpeg")})
        assert page.status_code == 400 and "Please check" in page.text, field


def test_a_message_that_cannot_be_built_fails_visibly_and_strands_nothing(client, settings, sessions, store, smtp):
    """An event named before validation existed (or written by hand) holds a line break: the
    message cannot be built. The delivery must end `failed` with the reason, not `sending` and
    then `uncertain`, and once the name is fixed the same photos go out."""
    smtp.start()
    event = make_event(sessions, name="City\nMarathon")
    ada, photos = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=2)
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
    assert run_queued_tasks(client, settings, sessions, store) == ["failed"]
    [delivery] = deliveries(sessions)
    assert delivery.status == "failed" and "could not be built" in delivery.error
    assert delivery.claimed_at is None  # it never reached the claim
    assert smtp.inbox.messages == []

    with unit_of_work(sessions) as uow:
        uow.session.execute(update(Event).where(Event.id == event.id).values(name="City Marathon"))
    assert client.post(f"/api/v1/events/{event.id}/notify").json() == {"queued": 1}
    assert run_queued_tasks(client, settings, sessions, store) == ["sent"]
    assert delivered_photo_ids(sessions, ada.id) == {p.id for p in photos}


def test_list_unsubscribe_is_written_plainly_on_the_wire(client, settings, sessions, store, smtp):
    smtp.inbox = RawInbox()
    smtp.start()
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Zoë Ångström", email="zoe@example.org", photos=1)
    client.post(f"/api/v1/events/{event.id}/notify")
    assert run_queued_tasks(client, settings, sessions, store) == ["sent"]
    [raw] = smtp.inbox.raw
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    unsubscribe_url = notify_service.runner_links(settings, ada.id).unsubscribe
    assert len(unsubscribe_url) > 78  # long enough that the stdlib would have folded and encoded it
    lines = header_block.split(b"\r\n")
    assert f"List-Unsubscribe: <{unsubscribe_url}>".encode() in lines
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    assert b"=?" not in b"".join(line for line in lines if line.lower().startswith(b"list-unsubscribe"))
    assert b"=?utf-8?" in header_block  # the non-ASCII name is still encoded where RFC 2047 belongs


def test_smtp_down_longer_than_stale_after_starts_no_second_retry_chain(settings, sessions, store, smtp):
    smtp.start()
    smtp.stop()  # a real server that went down: its port refuses connections
    event = make_event(sessions)
    ada, _ = runner_with_photos(sessions, store, event=event, name="Ada", email="ada@example.org", photos=1)
    with unit_of_work(sessions, RecordingSender()) as uow:
        assert notify_service.notify_runner(uow, ada.id) == 1
    [delivery] = deliveries(sessions)
    stale_after = timedelta(seconds=settings.stale_after_s)
    # the delivery was queued long ago; its task has been retrying through the outage since
    with unit_of_work(sessions) as uow:
        uow.session.execute(update(Delivery).where(Delivery.id == delivery.id)
                            .values(queued_at=utcnow() - 3 * stale_after))
    with pytest.raises(NotSent):  # this try, the latest of its chain, finds the server down
        notify_service.send_delivery(settings, sessions, store, delivery.id, task_id="chain-1", last_try=False)
    [delivery] = deliveries(sessions)
    assert delivery.status == "queued" and delivery.attempts == 1 and f"{smtp.port}" in delivery.error

    sender = RecordingSender()
    with unit_of_work(sessions, sender) as uow:
        swept = notify_service.sweep_stale_deliveries(uow, stale_after=stale_after)
    assert swept.requeued == [] and sender.sent == []  # its retry is due; this is no lost message

    # a delivery whose task really was lost (no try since stale_after) is still re-sent, once
    with unit_of_work(sessions) as uow:
        uow.session.execute(update(Delivery).where(Delivery.id == delivery.id)
                            .values(queued_at=utcnow() - 2 * stale_after))
    with unit_of_work(sessions, sender) as uow:
        swept = notify_service.sweep_stale_deliveries(uow, stale_after=stale_after)
    assert swept.requeued == [delivery.id] and sender.sent == [(SEND_RUNNER_EMAIL, (delivery.id,))]
    with unit_of_work(sessions, RecordingSender()) as uow:
        assert notify_service.sweep_stale_deliveries(uow, stale_after=stale_after).requeued == []
