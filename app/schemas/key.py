from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scope: Literal["organiser", "partner"] = "organiser"
    event_ids: list[str] = Field(default_factory=list, max_length=1000,
                                 description="partner keys: its events (none: every event of the organisation)")


class KeyOut(BaseModel):
    id: str
    name: str
    scope: Literal["organiser", "partner"]
    event_ids: list[str]
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="the secret key, shown only in this answer")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None
