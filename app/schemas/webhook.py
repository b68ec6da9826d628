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


# --- what a receiver gets (documented under "webhooks" in the OpenAPI schema) -------------------

class MatchedPhoto(BaseModel):
    photo_id: str
    face_id: str
    similarity: float


class RunnerMatchedData(BaseModel):
    runner_id: str
    event_id: str
    matches: list[MatchedPhoto] = Field(description="Best first, at most 1000 (`GET .../matches` pages them all)")


class EventProcessedData(BaseModel):
    event_id: str
    photos_done: int
    photos_failed: int


EXAMPLE_ENVELOPE = {"id": "evt_0190c7e1aa11bb22cc33dd44ee", "created_at": "2026-04-26T14:21:07.120331+00:00"}


class RunnerMatched(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE_ENVELOPE, "type": "runner.matched", "data": {
        "runner_id": "0190c7b1d2e3f405162738495a", "event_id": "0190c7a35b2e4f00a1b2c3d4e5",
        "matches": [{"photo_id": "0190c7a39f02d1e3c4b5a69788", "face_id": "0190c7a3a0114c2e9d8f7a6b5c",
                     "similarity": 0.74}]}}]})

    id: str = Field(description="Stable: the same on every retry; de-duplicate on it")
    type: Literal["runner.matched"]
    created_at: datetime
    data: RunnerMatchedData


class EventProcessed(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE_ENVELOPE, "type": "event.processed", "data": {
        "event_id": "0190c7a35b2e4f00a1b2c3d4e5", "photos_done": 1198, "photos_failed": 2}}]})

    id: str = Field(description="Stable: the same on every retry; de-duplicate on it")
    type: Literal["event.processed"]
    created_at: datetime
    data: EventProcessedData
