from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import CallerDep, SettingsDep, StoreDep, UoW
from app.api.openapi import api_errors
from app.db import Event
from app.db.session import UnitOfWork
from app.schemas.event import EventCreate, EventOut, EventPage, EventStatsOut, EventUpdate
from app.services import access
from app.services import events as event_service
from app.services import matching as matching_service
from app.services import privacy

router = APIRouter(tags=["events"])


def event_out(uow: UnitOfWork, event: Event, public_base_url: str) -> EventOut:
    stats = event_service.event_stats(uow, event.id)
    return EventOut(
        id=event.id, name=event.name, slug=event.slug, starts_on=event.starts_on,
        match_threshold=event.match_threshold, retention_days=event.retention_days,
        biometrics_expire_at=privacy.biometrics_expire_at(event),
        biometrics_purged_at=event.biometrics_purged_at, bib_search_public=event.bib_search_public,
        created_at=event.created_at,
        selfie_url=f"{public_base_url}/e/{event.slug}", stats=EventStatsOut(**stats.__dict__),
    )


@router.post("/events", status_code=201, response_model=EventOut, summary="Create an event",
             responses=api_errors("malformed_body", "validation_error", "payload_too_large"))
def create_event(body: EventCreate, uow: UoW, settings: SettingsDep, caller: CallerDep) -> EventOut:
    access.require_organiser(caller)
    threshold = body.match_threshold if body.match_threshold is not None else settings.default_match_threshold
    event = event_service.create_event(uow, organisation_id=caller.organisation_id, name=body.name,
                                       starts_on=body.starts_on, match_threshold=threshold,
                                       retention_days=body.retention_days or settings.retention_days,
                                       bib_search_public=body.bib_search_public)
    return event_out(uow, event, settings.public_base_url)


@router.get("/events", response_model=EventPage, summary="List the organisation's events",
            responses=api_errors("validation_error", "invalid_cursor"))
def list_events(uow: UoW, settings: SettingsDep, caller: CallerDep,
                limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> EventPage:
    """The organisation's events, newest first."""
    access.require_organiser(caller)
    events, next_cursor = event_service.list_events(uow, caller, limit=limit, cursor=cursor)
    return EventPage(items=[event_out(uow, e, settings.public_base_url) for e in events], next_cursor=next_cursor)


@router.get("/events/{event_id}", response_model=EventOut, summary="Get an event with its live counts",
            responses=api_errors("event_not_found"))
def get_event(event_id: str, uow: UoW, settings: SettingsDep, caller: CallerDep) -> EventOut:
    return event_out(uow, access.get_event(uow, caller, event_id), settings.public_base_url)


@router.patch("/events/{event_id}", response_model=EventOut, summary="Edit an event",
              responses={202: {"model": EventOut, "description": "the new threshold is being applied in the background"},
                         **api_errors("event_not_found", "malformed_body", "validation_error", "payload_too_large")})
def update_event(event_id: str, body: EventUpdate, response: Response, uow: UoW, settings: SettingsDep,
                 caller: CallerDep) -> EventOut:
    """Edit an event. A new `match_threshold` answers 202 and rematches the event's photos in the
    background, in chunks: `stats.rematch_done` reaches `stats.rematch_total` when finished."""
    access.require_organiser(caller)
    before = access.get_event(uow, caller, event_id).match_threshold
    changes = body.model_dump(exclude_unset=True)
    bib_search_public = changes.pop("bib_search_public", None)
    event = matching_service.update_event(uow, event_id, **changes)
    if bib_search_public is not None:
        event.bib_search_public = bib_search_public
    if event.match_threshold != before:
        response.status_code = 202
    return event_out(uow, event, settings.public_base_url)


@router.delete("/events/{event_id}", status_code=204, summary="Delete an event and everything in it",
               responses=api_errors("event_not_found"))
def delete_event(event_id: str, uow: UoW, store: StoreDep, caller: CallerDep) -> Response:
    """The event with its photos (files too), faces, runners, matches and deliveries."""
    access.require_organiser(caller)
    event_service.delete_event(uow, store, access.get_event(uow, caller, event_id))
    return Response(status_code=204)
