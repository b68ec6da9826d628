"""Organiser calls that e-mail runners their new photos (sending happens in the workers)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, UoW
from app.api.openapi import api_errors
from app.schemas.notify import NotifyOut
from app.services import access
from app.services import notify as notify_service

router = APIRouter(tags=["notify"])


@router.post("/events/{event_id}/notify", status_code=202, response_model=NotifyOut,
             summary="E-mail every runner their new photos", responses=api_errors("event_not_found"))
def notify_event(event_id: str, uow: UoW, caller: CallerDep) -> NotifyOut:
    access.require_organiser(caller)
    event = access.get_event(uow, caller, event_id)
    return NotifyOut(queued=notify_service.notify_event(uow, event.id))


@router.post("/runners/{runner_id}/notify", status_code=202, response_model=NotifyOut,
             summary="E-mail one runner their new photos", responses=api_errors("runner_not_found"))
def notify_runner(runner_id: str, uow: UoW, caller: CallerDep) -> NotifyOut:
    runner = access.get_runner(uow, caller, runner_id)
    return NotifyOut(queued=notify_service.notify_runner(uow, runner.id))
