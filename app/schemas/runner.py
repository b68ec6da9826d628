from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from app.schemas.text import PlainText
from models.bibs import canonical_bib

EXAMPLE_RUNNER = {"id": "0190c7b1d2e3f405162738495a", "event_id": "0190c7a35b2e4f00a1b2c3d4e5",
                  "name": "Ada Runner", "email": "ada@example.org", "bib": "1042",
                  "created_at": "2026-04-26T14:20:00Z", "matches": 7, "matching": "done",
                  "gallery_url": "https://photos.example.org/g/eyJyIjoiMDE5MGM3YjEifQ.sig"}
EXAMPLE_MATCH = {"photo_id": "0190c7a39f02d1e3c4b5a69788", "face_id": "0190c7a3a0114c2e9d8f7a6b5c",
                 "similarity": 0.74, "source": "face+bib"}


def _form_schema(schema: dict) -> None:
    schema["required"] = [*schema.get("required", []), "consent"]
    # A form field is text or absent, never null: show optional fields by their type alone.
    for name in ("bib", "face", "consent_version"):
        field = schema["properties"][name]
        typed = [s for s in field.pop("anyOf") if s.get("type") != "null"]
        field.update(typed[0])


class RunnerCreate(BaseModel):
    """The enrolment form's text fields (the selfie travels beside them as a file)."""

    # `consent` is documented as required and `true`; a missing or false box is still answered by
    # the service, with `consent_required` rather than a generic validation error.
    model_config = ConfigDict(str_strip_whitespace=True, json_schema_extra=_form_schema)

    name: PlainText = Field(min_length=1, max_length=200, examples=["Ada Runner"])
    email: EmailStr = Field(examples=["ada@example.org"],
                            description="Where the gallery link is sent; special-use domains such as `.test`, "
                                        "`.local` or `.invalid` are refused")
    bib: PlainText | None = Field(None, max_length=40, examples=["1042"])
    consent: bool = Field(False, description="Must be `true`: the runner agrees that their selfie is used to "
                                             "find them in the event's photos",
                          json_schema_extra={"const": True})
    consent_version: PlainText | None = Field(None, max_length=40, examples=["2026-04"], description=(
        "the version of the consent text the runner was shown (a partner site's own, through the API)"))
    face: int | None = Field(None, ge=0, le=100, description=(
        "after a `multiple_faces` answer: the `index` of your face; send the same selfie again"))

    @field_validator("bib", "face", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("bib")
    @classmethod
    def _one_spelling(cls, value: str | None) -> str | None:
        return None if value is None else canonical_bib(value)  # "0582" is bib 582, as read on photos


class RunnerOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_RUNNER]})

    id: str
    event_id: str
    name: str
    email: str | None  # null: a start-list runner imported without one
    bib: str | None
    created_at: datetime
    matches: int = Field(description="How many photos the runner is matched to")
    matching: Literal["pending", "done"] = Field(
        description="`pending` until matched against every face the event held when they enrolled")
    gallery_url: str = Field(description="The runner's private gallery; a secret link, e-mailed to them")


class RunnerPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_RUNNER], "next_cursor": "0190c7b1d2e3f405162738495a"}]})

    items: list[RunnerOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class MatchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_MATCH]})

    photo_id: str
    face_id: str | None = Field(description="The runner's face in the photo; null when found by the bib alone "
                                            "(their face not seen)")
    similarity: float | None = Field(description="Cosine similarity of the selfie (or the face their bib was read on) "
                                                 "and the face, at least the event's `match_threshold` when the "
                                                 "source is `face`; null when no face was compared, or once the "
                                                 "event's retention period has ended")
    source: Literal["face", "bib", "face+bib"] = Field(description="How the runner was found: their face, their bib "
                                                                   "number read on the photo, or both")


class StartListRejectedOut(BaseModel):
    line: int = Field(description="Line of the CSV file, the header being line 1")
    code: str = Field(description="`missing_bib`, `invalid_bib`, `invalid_email`, `name_too_long`, "
                                  "`wrong_field_count`, `duplicate_bib`, `duplicate_email` or `email_taken`")
    detail: str


class StartListOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "created": 412, "updated": 3,
        "rejected": [{"line": 17, "code": "invalid_bib", "detail": "Bib '12a' is not 1 to 6 digits."}]}]})

    created: int
    updated: int
    rejected: list[StartListRejectedOut] = Field(description="Rows not imported, with the reason; the others were")


class MatchList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_MATCH]}]})

    items: list[MatchOut] = Field(description="Best first")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page")
