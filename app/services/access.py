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
from app.db import ApiKey, Event, Photo, Runner, WebhookEndpoint
from app.db.session import UnitOfWork
from app.errors import Forbidden, NotFound

FORBIDDEN = "This key may not do that: partner keys enrol runners and read back their own (API.md)."


def require_organiser(caller: Caller) -> None:
    if not caller.is_organiser:
        raise Forbidden(FORBIDDEN)


def _organisation_events(caller: Caller) -> Select[tuple[Event]]:
    return select(Event).where(Event.organisation_id == caller.organisation_id)


def _organisation_runners(caller: Caller) -> Select[tuple[Runner]]:
    return select(Runner).join(Event, Event.id == Runner.event_id).where(
        Event.organisation_id == caller.organisation_id)


def readable_events(caller: Caller) -> Select[tuple[Event]]:
    query = _organisation_events(caller)
    if not caller.is_organiser and caller.event_ids:
        query = query.where(Event.id.in_(caller.event_ids))
    return query


def readable_photos(caller: Caller) -> Select[tuple[Photo]]:
    return select(Photo).join(Event, Event.id == Photo.event_id).where(
        Event.organisation_id == caller.organisation_id)


def readable_runners(caller: Caller) -> Select[tuple[Runner]]:
    query = _organisation_runners(caller)
    if not caller.is_organiser:
        query = query.where(Runner.enrolled_by_key_id == caller.key_id)
        if caller.event_ids:
            query = query.where(Runner.event_id.in_(caller.event_ids))
    return query


def readable_keys(caller: Caller) -> Select[tuple[ApiKey]]:
    return select(ApiKey).where(ApiKey.organisation_id == caller.organisation_id)


def readable_webhooks(caller: Caller) -> Select[tuple[WebhookEndpoint]]:
    return select(WebhookEndpoint).where(WebhookEndpoint.organisation_id == caller.organisation_id)


def _may_use_event(caller: Caller, event_id: str) -> bool:
    return caller.is_organiser or not caller.event_ids or event_id in caller.event_ids


def _one(uow: UnitOfWork, readable: Select, model, row_id: str, what: str):
    """The row of `readable` with this id; NotFound (`<what>_not_found`) when the caller cannot see it."""
    row = uow.session.scalar(readable.where(model.id == row_id))
    if row is None:
        raise NotFound(f"No {what} with id {row_id!r}.", code=f"{what}_not_found")
    return row


def get_event(uow: UnitOfWork, caller: Caller, event_id: str) -> Event:
    """The event, if it is the caller's organisation's (404) and, for a partner, one of its events (403)."""
    # organisation first, the partner's list second: outside the organisation is 404, inside 403
    event = _one(uow, _organisation_events(caller), Event, event_id, "event")
    if not _may_use_event(caller, event.id):
        raise Forbidden(FORBIDDEN)
    return event


def get_photo(uow: UnitOfWork, caller: Caller, photo_id: str) -> Photo:
    """Photos are the organiser's alone."""
    require_organiser(caller)
    return _one(uow, readable_photos(caller), Photo, photo_id, "photo")


def get_runner(uow: UnitOfWork, caller: Caller, runner_id: str) -> Runner:
    """The runner, if in the caller's organisation (404) and, for a partner, enrolled by this key (403)."""
    runner = _one(uow, _organisation_runners(caller), Runner, runner_id, "runner")
    if not caller.is_organiser and (runner.enrolled_by_key_id != caller.key_id
                                    or not _may_use_event(caller, runner.event_id)):
        raise Forbidden(FORBIDDEN)
    return runner


def get_key(uow: UnitOfWork, caller: Caller, key_id: str) -> ApiKey:
    require_organiser(caller)
    return _one(uow, readable_keys(caller), ApiKey, key_id, "key")


def get_webhook(uow: UnitOfWork, caller: Caller, webhook_id: str) -> WebhookEndpoint:
    require_organiser(caller)
    return _one(uow, readable_webhooks(caller), WebhookEndpoint, webhook_id, "webhook")
