from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api import upload_body
from app.api.deps import CallerDep, SettingsDep, StoreDep, UoW, UowFactory
from app.api.health import check_broker
from app.api.openapi import api_errors
from app.auth import Caller
from app.db import BibRead, Face, Photo
from app.errors import Unprocessable
from app.schemas.photo import BibOut, FaceOut, PhotoOut, PhotoPage, RejectedOut, UploadedPhotoOut, UploadOut
from app.services import access
from app.services import photos as photo_service
from app.services.uploads import Uploader, upload_limits

router = APIRouter(tags=["photos"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {"type": "array", "minItems": 1,
                                     "items": {"type": "string", "format": "binary"},
                                     "description": "JPEG, PNG or ZIP files (repeat the field)"}},
        }}},
    }
}


def photo_out(photo: Photo, faces: list[Face], reads: list[BibRead]) -> PhotoOut:
    return PhotoOut(
        id=photo.id, event_id=photo.event_id, filename=photo.filename, sha256=photo.sha256,
        size_bytes=photo.size_bytes, status=photo.status, error=photo.error, width=photo.width,
        height=photo.height, created_at=photo.created_at,
        faces=[FaceOut(id=f.id, box=f.box, score=f.score) for f in faces],
        bibs=[BibOut(number=b.number, box=b.box, score=b.score, face_id=b.face_id) for b in reads],
    )


def _check_event(open_uow: UowFactory, caller: Caller, event_id: str) -> None:
    with open_uow() as uow:
        access.get_event(uow, caller, event_id)


@router.post("/events/{event_id}/photos", status_code=202, response_model=UploadOut, openapi_extra=UPLOAD_BODY,
             summary="Upload photos (JPEG, PNG or ZIPs of them)",
             responses=api_errors("event_not_found", "payload_too_large", "too_many_files", "no_files",
                                  "malformed_upload", "broker_unavailable"))
async def upload_photos(event_id: str, request: Request, open_uow: UowFactory,
                        settings: SettingsDep, store: StoreDep, caller: CallerDep) -> UploadOut:
    access.require_organiser(caller)
    # No transaction stays open while the body arrives: each step below opens a short one.
    await run_in_threadpool(_check_event, open_uow, caller, event_id)
    # Broker down: answer 503 (broker_unavailable) before reading a byte, rather than store photos
    # whose task cannot be sent. If it dies mid-upload, the photos already stored stay `pending`
    # and the sweeper queues them once it is back (README: "Limits and failure handling").
    await run_in_threadpool(check_broker, request.app.state.celery)
    uploader = Uploader(open_uow, store, settings.data_dir / "tmp", upload_limits(settings), event_id,
                        photos_per_task=settings.photos_per_task)
    # every file is staged (once, as it streams in) before the first one is processed, so a body
    # that turns out broken or with too many files stores nothing
    files = await upload_body.read_files(request.headers.get("content-type", ""), request.stream(),
                                         uploader.new_file, max_files=settings.max_files_per_request)
    if not files:
        raise Unprocessable("Send one or more files in the multipart field `files`.", code="no_files")
    await run_in_threadpool(uploader.add_all_staged, files)
    return UploadOut(
        photos=[UploadedPhotoOut(**p.__dict__) for p in uploader.report.photos],
        rejected=[RejectedOut(**r.__dict__) for r in uploader.report.rejected],
    )


@router.get("/events/{event_id}/photos", response_model=PhotoPage, summary="List an event's photos",
            responses=api_errors("event_not_found", "validation_error", "invalid_cursor"))
def list_photos(event_id: str, uow: UoW, caller: CallerDep,
                status: Literal["pending", "processing", "done", "failed"] | None = None,
                limit: int = Query(100, ge=1, le=1000), cursor: str | None = None,
                bib: str | None = Query(None, pattern=r"^\d{1,6}$", examples=["1042"],
                                        description="Only the photos on which this bib number was read")) -> PhotoPage:
    access.require_organiser(caller)
    access.get_event(uow, caller, event_id)
    photos, next_cursor = photo_service.list_photos(uow, event_id, status=status, limit=limit, cursor=cursor,
                                                    bib=bib)
    ids = [p.id for p in photos]
    faces, reads = photo_service.faces_of(uow, ids), photo_service.bib_reads_of(uow, ids)
    return PhotoPage(items=[photo_out(p, faces[p.id], reads[p.id]) for p in photos], next_cursor=next_cursor)


@router.get("/photos/{photo_id}", response_model=PhotoOut, summary="Get a photo with its faces",
            responses=api_errors("photo_not_found"))
def get_photo(photo_id: str, uow: UoW, caller: CallerDep) -> PhotoOut:
    photo = access.get_photo(uow, caller, photo_id)
    return photo_out(photo, photo_service.faces_of(uow, [photo.id])[photo.id],
                     photo_service.bib_reads_of(uow, [photo.id])[photo.id])


@router.delete("/photos/{photo_id}", status_code=204, summary="Delete a photo", responses=api_errors("photo_not_found"))
def delete_photo(photo_id: str, uow: UoW, store: StoreDep, caller: CallerDep) -> Response:
    """The photo, its files, faces and matches."""
    photo_service.delete_photo(uow, store, access.get_photo(uow, caller, photo_id))
    return Response(status_code=204)


@router.post("/photos/{photo_id}/retry", status_code=202, response_model=PhotoOut,
             summary="Process a failed photo again", responses=api_errors("photo_not_found", "photo_not_failed"))
def retry_photo(photo_id: str, uow: UoW, caller: CallerDep) -> PhotoOut:
    """Queue a `failed` photo for processing again, with a fresh set of attempts (organisers)."""
    access.require_organiser(caller)
    photo = photo_service.retry_photo(uow, access.get_photo(uow, caller, photo_id))
    return photo_out(photo, [], [])  # a failed photo has no faces and no bibs
