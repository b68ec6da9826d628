"""Organiser calls that e-mail runners their new photos (sending happens in the workers)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ApiKeyDep, UoW
from app.api.openapi import api_errors
from app.schemas.notify import NotifyOut
from app.services import notify as notify_service

router = APIRouter(tags=["notify"])


@router.post("/events/{event_id}/notify", status_code=202, response_model=NotifyOut,
             summary="E-mail every runner their new photos", responses=api_errors("event_not_found"))
def notify_event(event_id: str, uow: UoW, _key: ApiKeyDep) -> NotifyOut:
    return NotifyOut(queued=notify_service.notify_event(uow, event_id))


@router.post("/runners/{runner_id}/notify", status_code=202, response_model=NotifyOut,
             summary="E-mail one runner their new photos", responses=api_errors("runner_not_found"))
def notify_runner(runner_id: str, uow: UoW, _key: ApiKeyDep) -> NotifyOut:
    return NotifyOut(queued=notify_service.notify_runner(uow, runner_id))
