from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EventType = Literal["runner.matched", "event.processed"]
EXAMPLE_WEBHOOK = {"id": "0190c7d0aa11bb22cc33dd44ee", "url": "https://city-run.example/hooks/finishline",
                   "events": ["runner.matched", "event.processed"], "created_at": "2026-04-20T09:05:00Z"}


class WebhookCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "url": "https://city-run.example/hooks/finishline", "events": ["runner.matched", "event.processed"]}]})

    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://[^\s/?#]+[^\s]*$",
                     description="http(s) URL; hosts resolving to loopback or private addresses are refused")
    events: list[EventType] = Field(min_length=1, max_length=10, description="The event types to receive")


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_WEBHOOK]})

    id: str
    url: str
    events: list[EventType]
    created_at: datetime


class WebhookCreated(WebhookOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        **EXAMPLE_WEBHOOK, "secret": "whsec_3q2-7wEXAMPLEonlyk9Lx0c1Yb2Za8sQ4mN6pR5tU7vW"}]})

    secret: str = Field(description="Verifies `Finishline-Signature`; shown only in this answer")


class WebhookList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_WEBHOOK]}]})

    items: list[WebhookOut]
