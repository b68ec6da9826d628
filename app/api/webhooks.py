"""The organisation's webhook endpoints: subscribe a URL to event types, list, delete. Organisers only."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import CallerDep, SettingsDep, UoW
from app.api.openapi import api_errors
from app.db import WebhookEndpoint
from app.schemas.webhook import WebhookCreate, WebhookCreated, WebhookList, WebhookOut
from app.services import webhooks as webhook_service

router = APIRouter(tags=["webhooks"])


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(id=endpoint.id, url=endpoint.url, events=endpoint.events, created_at=endpoint.created_at)


@router.post("/webhooks", status_code=201, response_model=WebhookCreated, summary="Subscribe a URL to events",
             responses=api_errors("malformed_body", "validation_error", "invalid_url", "unsafe_url",
                                  "payload_too_large"))
def create_webhook(body: WebhookCreate, uow: UoW, settings: SettingsDep, caller: CallerDep) -> WebhookCreated:
    """Deliveries are signed with the `secret` in this answer (see the README for checking it)."""
    endpoint = webhook_service.create_endpoint(uow, caller, url=body.url, events=list(body.events),
                                               allow_private=settings.webhook_allow_private)
    return WebhookCreated(**webhook_out(endpoint).model_dump(), secret=endpoint.secret)


@router.get("/webhooks", response_model=WebhookList, summary="List the organisation's webhooks",
            responses=api_errors())
def list_webhooks(uow: UoW, caller: CallerDep) -> WebhookList:
    return WebhookList(items=[webhook_out(e) for e in webhook_service.list_endpoints(uow, caller)])


@router.delete("/webhooks/{webhook_id}", status_code=204, summary="Delete a webhook",
               responses=api_errors("webhook_not_found"))
def delete_webhook(webhook_id: str, uow: UoW, caller: CallerDep) -> Response:
    webhook_service.delete_endpoint(uow, caller, webhook_id)
    return Response(status_code=204)
