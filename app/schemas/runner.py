from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator


class RunnerCreate(BaseModel):
    """The enrolment form's text fields (the selfie travels beside them as a file)."""

    model_config = ConfigDict(str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    bib: str | None = Field(None, max_length=40)
    consent: bool = False  # checked by the service, so a missing box gets `consent_required`
    face: int | None = Field(None, ge=0, le=100, description=(
        "after a `multiple_faces` answer: the `index` of your face; send the same selfie again"))

    @field_validator("bib", "face", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class RunnerOut(BaseModel):
    id: str
    event_id: str
    name: str
    email: str
    bib: str | None
    created_at: datetime
    matches: int
    matching: Literal["pending", "done"] = Field(
        description="`pending` until matched against every face the event held when they enrolled")
    gallery_url: str


class RunnerPage(BaseModel):
    items: list[RunnerOut]
    next_cursor: str | None


class MatchOut(BaseModel):
    photo_id: str
    face_id: str
    similarity: float


class MatchList(BaseModel):
    items: list[MatchOut] = Field(description="best first")
    next_cursor: str | None = None
