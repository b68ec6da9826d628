from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class FaceOut(BaseModel):
    id: str
    box: list[float]  # x1, y1, x2, y2 in the original image's pixels (after EXIF orientation)
    score: float


class BibOut(BaseModel):
    number: str  # digits as printed on the bib
    box: list[float]  # x1, y1, x2, y2 of the numerals, in the original image's pixels
    score: float  # the recogniser's confidence, 0-1
    face_id: str | None  # the face (in `faces`) whose torso holds the bib, or null


class PhotoOut(BaseModel):
    id: str
    event_id: str
    filename: str
    sha256: str
    size_bytes: int
    status: str
    error: str | None
    width: int | None
    height: int | None
    created_at: datetime
    faces: list[FaceOut]
    bibs: list[BibOut] = []


class PhotoPage(BaseModel):
    items: list[PhotoOut]
    next_cursor: str | None


class UploadedPhotoOut(BaseModel):
    id: str
    filename: str
    status: str
    duplicate: bool


class RejectedOut(BaseModel):
    filename: str
    code: str
    detail: str


class UploadOut(BaseModel):
    photos: list[UploadedPhotoOut]
    rejected: list[RejectedOut]
