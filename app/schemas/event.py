from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from annotated_types import Interval
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.schemas.text import PlainText


def _iso_text(value: object) -> object:
    # An ISO date string, as the schema says; pydantic would read a number as a Unix time (0: 1970-01-01).
    if not isinstance(value, str | date):
        raise ValueError("expected a date as text, YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_text)]


def _not_bool(value: object) -> object:
    # JSON `true` is not a number of days, though pydantic would read it as 1.
    if isinstance(value, bool):
        raise ValueError("expected a whole number of days")
    return value


Days = Annotated[int, Interval(ge=1, le=3650), BeforeValidator(_not_bool)]

EXAMPLE_STATS = {"photos": 1200, "photos_pending": 150, "photos_processing": 8, "photos_done": 1040,
                 "photos_failed": 2, "faces": 5630, "runners": 310, "matches": 2210, "emails_queued": 0,
                 "emails_sent": 296, "emails_failed": 1, "emails_uncertain": 0}
EXAMPLE_EVENT = {"id": "0190c7a35b2e4f00a1b2c3d4e5", "name": "City Marathon 2026", "slug": "city-marathon-2026-3fa9c1",
                 "starts_on": "2026-04-26", "match_threshold": 0.61, "bib_search_public": False,
                 "created_at": "2026-04-20T08:30:00Z",
                 "selfie_url": "https://photos.example.org/e/city-marathon-2026-3fa9c1", "stats": EXAMPLE_STATS,
                 "retention_days": 90, "biometrics_expire_at": "2026-07-25T00:00:00Z", "biometrics_purged_at": None}


RETENTION_DAYS = Field(None, description="Days after the event date (or creation) after "
                       "which all face templates are deleted; galleries keep working.")


class EventCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "City Marathon 2026", "starts_on": "2026-04-26"}]})

    name: PlainText = Field(min_length=1, max_length=200)
    starts_on: Day | None = None
    match_threshold: float | None = Field(None, gt=0.0, lt=1.0)
    retention_days: Days | None = RETENTION_DAYS
    bib_search_public: bool = Field(False, strict=True, description=(
        "Runners may find photos by bib number on the event's page (anyone who knows a number sees its photos)"))


class EventUpdate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"match_threshold": 0.58}]})

    name: PlainText | None = Field(None, min_length=1, max_length=200)
    starts_on: Day | None = None
    match_threshold: float | None = Field(None, gt=0.0, lt=1.0)
    retention_days: Days | None = RETENTION_DAYS
    bib_search_public: bool | None = Field(None, strict=True)


class EventStatsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_STATS]})

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
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_EVENT]})

    id: str
    name: str
    slug: str
    starts_on: date | None
    match_threshold: float
    retention_days: int
    biometrics_expire_at: datetime
    biometrics_purged_at: datetime | None = None
    bib_search_public: bool
    created_at: datetime
    selfie_url: str
    stats: EventStatsOut


class EventPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_EVENT],
                                                               "next_cursor": "0190c7a35b2e4f00a1b2c3d4e5"}]})

    items: list[EventOut] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
