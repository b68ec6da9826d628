from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PhotoStatusName = Literal["pending", "processing", "done", "failed"]
# x1, y1, x2, y2 in the original image's pixels (after EXIF orientation)
Box = Annotated[list[float], Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in the original image's pixels")]

EXAMPLE_FACE = {"id": "0190c7a3a0114c2e9d8f7a6b5c", "box": [1204.5, 388.0, 1391.2, 610.7], "score": 0.93}
EXAMPLE_PHOTO = {"id": "0190c7a39f02d1e3c4b5a69788", "event_id": "0190c7a35b2e4f00a1b2c3d4e5",
                 "filename": "finish/IMG_0412.jpg", "sha256": "9f2c" + "0" * 60, "size_bytes": 4811021,
                 "status": "done", "width": 6000, "height": 4000,
                 "created_at": "2026-04-26T11:02:13Z", "faces": [EXAMPLE_FACE]}
EXAMPLE_BIB = {"number": "1042", "box": [1180.0, 905.5, 1402.3, 1010.0], "score": 0.998,
               "face_id": EXAMPLE_FACE["id"]}
EXAMPLE_PHOTO["bibs"] = [EXAMPLE_BIB]


class FaceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_FACE]})

    id: str
    box: Box
    score: float


class BibOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_BIB]})

    number: str = Field(description="The bib number read: 1-6 digits, without leading zeros")
    box: Box = Field(description="x1, y1, x2, y2 of the numerals, in the original image's pixels")
    score: float = Field(description="The recogniser's confidence, 0-1")
    face_id: str | None = Field(description="The face (in `faces`) whose torso holds the bib; null when none does")


class PhotoOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_PHOTO]})

    id: str
    event_id: str
    filename: str
    sha256: str
    size_bytes: int
    status: PhotoStatusName
    # A default only so the schema's example may leave it out (FastAPI drops nulls from examples).
    error: str | None = Field(None, description="Why processing failed (`code: detail`); null unless failed")
    width: int | None
    height: int | None
    created_at: datetime
    faces: list[FaceOut]
    bibs: list[BibOut] = Field([], description="Bib numbers read on the photo")


class PhotoPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_PHOTO],
                                                               "next_cursor": "0190c7a39f02d1e3c4b5a69788"}]})

    items: list[PhotoOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class UploadedPhotoOut(BaseModel):
    id: str
    filename: str
    status: PhotoStatusName
    duplicate: bool = Field(description="The event already had a photo with these bytes; this is that photo")


class RejectedOut(BaseModel):
    filename: str
    code: str = Field(description="Stable reason, e.g. `unsupported_type`, `not_an_image`, `file_too_large`, "
                                  "`image_too_large`, `empty_file`, `corrupt_archive`")
    detail: str


class UploadOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "photos": [{"id": "0190c7a39f02d1e3c4b5a69788", "filename": "IMG_0412.jpg", "status": "pending",
                    "duplicate": False}],
        "rejected": [{"filename": "notes.txt", "code": "unsupported_type",
                      "detail": "not a JPEG, PNG or ZIP file"}]}]})

    photos: list[UploadedPhotoOut]
    rejected: list[RejectedOut]
