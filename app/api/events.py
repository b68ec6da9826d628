from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import ApiKeyDep, SettingsDep, UoW
from app.db import Event
from app.db.session import UnitOfWork
from app.schemas.event import EventCreate, EventOut, EventStatsOut, EventUpdate
from app.services import events as event_service
from app.services import matching as matching_service

router = APIRouter(tags=["events"])


def event_out(uow: UnitOfWork, event: Event, public_base_url: str) -> EventOut:
    stats = event_service.event_stats(uow, event.id)
    return EventOut(
        id=event.id, name=event.name, slug=event.slug, starts_on=event.starts_on,
        match_threshold=event.match_threshold, created_at=event.created_at,
        selfie_url=f"{public_base_url}/e/{event.slug}", stats=EventStatsOut(**stats.__dict__),
    )


@router.post("/events", status_code=201, response_model=EventOut)
def create_event(body: EventCreate, uow: UoW, settings: SettingsDep, _key: ApiKeyDep) -> EventOut:
    threshold = body.match_threshold if body.match_threshold is not None else settings.default_match_threshold
    event = event_service.create_event(uow, name=body.name, starts_on=body.starts_on, match_threshold=threshold)
    return event_out(uow, event, settings.public_base_url)


@router.get("/events/{event_id}", response_model=EventOut)
def get_event(event_id: str, uow: UoW, settings: SettingsDep, _key: ApiKeyDep) -> EventOut:
    return event_out(uow, event_service.get_event(uow, event_id), settings.public_base_url)


@router.patch("/events/{event_id}", response_model=EventOut, responses={202: {"model": EventOut}})
def update_event(event_id: str, body: EventUpdate, response: Response, uow: UoW, settings: SettingsDep,
                 _key: ApiKeyDep) -> EventOut:
    """Edit an event. A new `match_threshold` answers 202 and rematches the event's photos in the
    background, in chunks: `stats.rematch_done` reaches `stats.rematch_total` when finished."""
    before = event_service.get_event(uow, event_id).match_threshold
    event = matching_service.update_event(uow, event_id, **body.model_dump(exclude_unset=True))
    if event.match_threshold != before:
        response.status_code = 202
    return event_out(uow, event, settings.public_base_url)
