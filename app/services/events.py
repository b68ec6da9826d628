"""Events: creation, lookup, listing, deletion and live statistics."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

from app.auth import Caller
from app.db import Delivery, Event, Match, Photo, PhotoStatus, Runner
from app.db.session import UnitOfWork
from app.errors import NotFound
from app.services import access
from app.services.pagination import keyset_page
from app.storage import PhotoStore


@dataclass(frozen=True)
class EventStats:
    photos: int
    photos_pending: int
    photos_processing: int
    photos_done: int
    photos_failed: int
    faces: int
    runners: int
    matches: int
    emails_queued: int  # queued or being sent
    emails_sent: int
    emails_failed: int  # after the last retry (details on the runner)
    emails_uncertain: int  # a worker stopped mid-send; not resent to avoid a duplicate
    rematch_total: int  # photos of the background rematch after a threshold change
    rematch_done: int


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60] or "event"
    # a random suffix keeps slugs unique and the selfie page hard to guess from the name alone
    return f"{base}-{secrets.token_hex(3)}"


def create_event(
    uow: UnitOfWork, *, organisation_id: str, name: str, starts_on: date | None, match_threshold: float,
    retention_days: int,
    bib_search_public: bool = False,
) -> Event:
    event = Event(organisation_id=organisation_id, name=name, slug=slugify(name), starts_on=starts_on,
                  match_threshold=match_threshold, retention_days=retention_days,
                  bib_search_public=bib_search_public)
    uow.session.add(event)
    uow.session.flush()
    return event


def get_event(uow: UnitOfWork, event_id: str) -> Event:
    event = uow.session.get(Event, event_id)
    if event is None:
        raise NotFound(f"No event with id {event_id!r}.", code="event_not_found")
    return event


def list_events(uow: UnitOfWork, caller: Caller, *, limit: int, cursor: str | None) -> tuple[list[Event], str | None]:
    """The caller's events, newest first (ids sort by creation time)."""
    return keyset_page(uow, access.readable_events(caller), [(Event.id, True)], limit=limit, cursor=cursor,
                       sort_key=lambda e: [e.id])


def delete_event(uow: UnitOfWork, store: PhotoStore, event: Event) -> None:
    """The event and everything in it: the database cascades to photos, faces, runners, matches
    and deliveries; the files (all under `events/<id>/`) go once the rows are surely gone."""
    prefix = f"events/{event.id}"
    uow.session.delete(event)
    uow.session.flush()
    uow.session.expire_all()  # cascaded rows are gone in the database, not yet in the session

    uow.after_commit(lambda: store.delete_prefix(prefix))  # selfies are never stored


def get_event_by_slug(uow: UnitOfWork, slug: str) -> Event:
    event = uow.session.scalar(select(Event).where(Event.slug == slug))
    if event is None:
        raise NotFound(f"No event {slug!r}.", code="event_not_found")
    return event


def event_stats(uow: UnitOfWork, event_id: str) -> EventStats:
    """Counts from indexes: photos by status with their stored face counts (one pass over the
    event's photos, never over its faces), runners and matches by their event_id indexes."""
    session = uow.session
    photo_rows = session.execute(
        select(Photo.status, func.count(), func.coalesce(func.sum(Photo.face_count), 0))
        .where(Photo.event_id == event_id).group_by(Photo.status)
    ).all()
    by_status = {status: n for status, n, _ in photo_rows}
    progress = session.execute(select(Event.rematch_total, Event.rematch_done).where(Event.id == event_id)).one()

    emails = dict(
        session.execute(
            select(Delivery.status, func.count()).where(Delivery.event_id == event_id).group_by(Delivery.status)
        ).all()
    )

    def count(model) -> int:
        return session.scalar(select(func.count()).select_from(model).where(model.event_id == event_id)) or 0

    return EventStats(
        photos=sum(by_status.values()),
        photos_pending=by_status.get(PhotoStatus.pending.value, 0),
        photos_processing=by_status.get(PhotoStatus.processing.value, 0),
        photos_done=by_status.get(PhotoStatus.done.value, 0),
        photos_failed=by_status.get(PhotoStatus.failed.value, 0),
        faces=sum(int(faces) for _, _, faces in photo_rows),
        runners=count(Runner),
        matches=count(Match),
        emails_queued=emails.get("queued", 0) + emails.get("sending", 0),
        emails_sent=emails.get("sent", 0),
        emails_failed=emails.get("failed", 0),
        emails_uncertain=emails.get("uncertain", 0),
        rematch_total=progress.rematch_total,
        rematch_done=progress.rematch_done,
    )

