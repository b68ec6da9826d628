from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class EventCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    starts_on: date | None = None
    match_threshold: float | None = Field(None, gt=0.0, lt=1.0)


class EventUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    starts_on: date | None = None
    match_threshold: float | None = Field(None, gt=0.0, lt=1.0)


class EventStatsOut(BaseModel):
    photos: int
    photos_pending: int
    photos_processing: int
    photos_done: int
    photos_failed: int
    faces: int
    runners: int
    matches: int
    emails_queued: int
    emails_sent: int
    emails_failed: int
    emails_uncertain: int
    rematch_total: int = Field(0, description="photos to rematch after the last threshold change")
    rematch_done: int = Field(0, description="of those, rematched so far (equal: finished)")


class EventOut(BaseModel):
    id: str
    name: str
    slug: str
    starts_on: date | None
    match_threshold: float
    created_at: datetime
    selfie_url: str
    stats: EventStatsOut


class EventPage(BaseModel):
    items: list[EventOut] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
