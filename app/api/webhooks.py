"""The organisation's webhook endpoints: subscribe a URL to event types, list, delete. Organisers only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Response

from app.api.deps import CallerDep, SettingsDep, UoW
from app.api.openapi import api_errors
from app.db import WebhookEndpoint
from app.schemas.webhook import EventProcessed, RunnerMatched, WebhookCreate, WebhookCreated, WebhookList, WebhookOut
from app.services import access
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
    webhook_service.delete_endpoint(uow, access.get_webhook(uow, caller, webhook_id))
    return Response(status_code=204)


# --- the deliveries themselves, for /docs and the schema's "webhooks" -----------------------------

Signature = Annotated[str, Header(alias="Finishline-Signature", description=(
    "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`: check it over the raw "
    "body before parsing, and refuse old `t`"))]
RECEIVER_ANSWERS = {200: {"description": "Any 2xx: delivered, never sent again. Anything else, or no answer "
                                         "in 10 s: retried with backoff (about half an hour)"}}


def document_deliveries(app: FastAPI) -> None:
    @app.webhooks.post("runner.matched", summary="A runner's matching finished or their matches changed",
                       responses=RECEIVER_ANSWERS)
    def runner_matched(body: RunnerMatched, finishline_signature: Signature) -> None:
        """POSTed to each endpoint subscribed to `runner.matched`."""

    @app.webhooks.post("event.processed", summary="No photo of the event is pending or processing any more",
                       responses=RECEIVER_ANSWERS)
    def event_processed(body: EventProcessed, finishline_signature: Signature) -> None:
        """POSTed once each time it becomes true (new photos that finish make it true again)."""
