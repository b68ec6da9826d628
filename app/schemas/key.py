from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import PlainText

EXAMPLE_KEY = {"id": "0190c7c0aa11bb22cc33dd44ee", "name": "partner: city-run.example", "scope": "partner",
               "event_ids": ["0190c7a35b2e4f00a1b2c3d4e5"], "created_at": "2026-04-20T09:00:00Z"}


def _only_partner_keys_have_events(schema: dict) -> None:
    schema["if"] = {"properties": {"scope": {"const": "organiser"}}}  # also when scope is left out
    schema["then"] = {"properties": {"event_ids": {"maxItems": 0}}}
    schema["examples"] = [{"name": "partner: city-run.example", "scope": "partner",
                           "event_ids": ["0190c7a35b2e4f00a1b2c3d4e5"]}]


class KeyCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra=_only_partner_keys_have_events)

    name: PlainText = Field(min_length=1, max_length=200)
    scope: Literal["organiser", "partner"] = "organiser"
    event_ids: list[str] = Field(default_factory=list, max_length=1000,
                                 description="partner keys: its events (none: every event of the organisation)")


class KeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_KEY]})

    id: str
    name: str
    scope: Literal["organiser", "partner"]
    event_ids: list[str]
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyOut):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        **EXAMPLE_KEY, "key": "fl_0190c7c0aa11bb22cc33dd44ee_k3Y-s3cr3t-0nly-sh0wn-0nc3-xxxxxxxxxxx"}]})

    key: str = Field(description="the secret key, shown only in this answer")


class KeyPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_KEY],
                                                               "next_cursor": "0190c7c0aa11bb22cc33dd44ee"}]})

    items: list[KeyOut]
    next_cursor: str | None
