"""Tenancy in one place: what a caller may read, as statements every lookup starts from.

- Another organisation's rows are invisible: their ids raise NotFound, exactly like unknown ids.
- A partner key (scope `partner`) may use only its events (`event_ids`, all of the
  organisation's when empty) and only the runners it enrolled itself; anything else in its own
  organisation raises Forbidden (403 `forbidden`). Organiser-only routes call `require_organiser`
  before looking anything up, so a partner learns nothing about which ids exist.

Routes resolve every id from the path through a `get_*` here and hand the rows (or their ids)
to the services, which therefore only ever see rows the caller may touch.
"""

from __future__ import annotations

from sqlalchemy import Select, select

from app.auth import Caller
from app.db import ApiKey, Event, Photo, Runner
from app.db.session import UnitOfWork
from app.errors import Forbidden, NotFound

FORBIDDEN = "This key may not do that: partner keys enrol runners and read back their own (API.md)."


def require_organiser(caller: Caller) -> None:
    if not caller.is_organiser:
        raise Forbidden(FORBIDDEN)


def readable_events(caller: Caller) -> Select[tuple[Event]]:
    query = select(Event).where(Event.organisation_id == caller.organisation_id)
    if not caller.is_organiser and caller.event_ids:
        query = query.where(Event.id.in_(caller.event_ids))
    return query


def readable_photos(caller: Caller) -> Select[tuple[Photo]]:
    return select(Photo).join(Event, Event.id == Photo.event_id).where(
        Event.organisation_id == caller.organisation_id)


def readable_runners(caller: Caller) -> Select[tuple[Runner]]:
    query = select(Runner).join(Event, Event.id == Runner.event_id).where(
        Event.organisation_id == caller.organisation_id)
    if not caller.is_organiser:
        query = query.where(Runner.enrolled_by_key_id == caller.key_id)
        if caller.event_ids:
            query = query.where(Runner.event_id.in_(caller.event_ids))
    return query


def readable_keys(caller: Caller) -> Select[tuple[ApiKey]]:
    return select(ApiKey).where(ApiKey.organisation_id == caller.organisation_id)


def _may_use_event(caller: Caller, event_id: str) -> bool:
    return caller.is_organiser or not caller.event_ids or event_id in caller.event_ids


def get_event(uow: UnitOfWork, caller: Caller, event_id: str) -> Event:
    """The event, if it is the caller's organisation's (404) and, for a partner, one of its events (403)."""
    event = uow.session.scalar(select(Event).where(Event.id == event_id,
                                                   Event.organisation_id == caller.organisation_id))
    if event is None:
        raise NotFound(f"No event with id {event_id!r}.", code="event_not_found")
    if not _may_use_event(caller, event.id):
        raise Forbidden(FORBIDDEN)
    return event


def get_photo(uow: UnitOfWork, caller: Caller, photo_id: str) -> Photo:
    """Photos are the organiser's alone."""
    require_organiser(caller)
    photo = uow.session.scalar(readable_photos(caller).where(Photo.id == photo_id))
    if photo is None:
        raise NotFound(f"No photo with id {photo_id!r}.", code="photo_not_found")
    return photo


def get_runner(uow: UnitOfWork, caller: Caller, runner_id: str) -> Runner:
    """The runner, if in the caller's organisation (404) and, for a partner, enrolled by this key (403)."""
    runner = uow.session.scalar(
        select(Runner).join(Event, Event.id == Runner.event_id)
        .where(Runner.id == runner_id, Event.organisation_id == caller.organisation_id))
    if runner is None:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")
    if not caller.is_organiser and (runner.enrolled_by_key_id != caller.key_id
                                    or not _may_use_event(caller, runner.event_id)):
        raise Forbidden(FORBIDDEN)
    return runner


def get_key(uow: UnitOfWork, caller: Caller, key_id: str) -> ApiKey:
    require_organiser(caller)
    key = uow.session.scalar(readable_keys(caller).where(ApiKey.id == key_id))
    if key is None:
        raise NotFound(f"No key with id {key_id!r}.", code="key_not_found")
    return key
