"""The resumable upload endpoints the event page's script uses (app/services/chunked_uploads.py).

    POST /dashboard/events/{id}/uploads            {"filename", "size"} -> 201 {"id", "offset", "chunk_bytes"}
    GET  /dashboard/events/{id}/uploads/{upload}   -> {"offset", "status", "result"}
    PUT  /dashboard/events/{id}/uploads/{upload}?offset=N   the bytes from N -> {"offset", "status", "result"}

A PUT for the wrong offset answers 409 with the offset wanted. Once the last piece is in, the
upload is `assembling` and a worker runs the file through the Uploader (ASSEMBLE_UPLOAD: a zip is
expanded there, not in this process); the script polls the GET until `done`, whose `result` is the
upload report (photos and rejections). With the broker down the upload stays `complete` until a
GET finds it back. An assembly that died with its worker is queued again by the sweeper, or by
the next GET, once stale.
All take the session cookie; the POST and PUT also the X-CSRF-Token header.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from kombu.exceptions import OperationalError as BrokerError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import SettingsDep, StoreDep, UoW
from app.api.health import check_broker
from app.errors import PayloadTooLarge
from app.pages.dashboard.auth import PostDep, SignedInDep
from app.services import access, chunked_uploads
from app.services.chunked_uploads import OffsetMismatch

log = logging.getLogger(__name__)
router = APIRouter()


class UploadStart(BaseModel):
    filename: str = Field(min_length=1, max_length=1000)
    size: int = Field(gt=0)


def _state(upload, settings) -> dict:
    return {"id": upload.id, "offset": upload.received_bytes, "size": upload.size_bytes,
            "status": upload.status, "result": upload.result, "chunk_bytes": settings.upload_chunk_bytes}


@router.post("/dashboard/events/{event_id}/uploads", status_code=201)
def start_upload(event_id: str, body: UploadStart, uow: UoW, settings: SettingsDep, who: PostDep) -> JSONResponse:
    access.require_organiser(who.caller)
    event = access.get_event(uow, who.caller, event_id)
    # a zip may be as large as what it may expand to; a photo alone is checked after assembly
    max_bytes = max(settings.max_file_bytes, settings.max_archive_bytes)
    upload = chunked_uploads.start_upload(uow, event_id=event.id, filename=body.filename, size=body.size,
                                          max_bytes=max_bytes)
    return JSONResponse(_state(upload, settings), status_code=201)


def _queue_assembly(uow, upload, celery) -> None:  # type: ignore[no-untyped-def]
    """Claim the assembly of a complete (or stale) upload only while the broker answers: with it
    down the upload stays `complete` and the page's next poll claims it, instead of `assembling`
    with a message that was never sent (which only the sweeper would find, after STALE_FINISH)."""
    if not chunked_uploads.ready_to_assemble(upload):
        return
    try:
        check_broker(celery)
    except BrokerError:
        log.warning("broker unavailable: upload %s waits for the next poll to be assembled", upload.id)
        return
    chunked_uploads.claim_finish(uow, upload)  # ASSEMBLE_UPLOAD is sent once this commits `assembling`


@router.get("/dashboard/events/{event_id}/uploads/{upload_id}")
def upload_state(event_id: str, upload_id: str, request: Request, uow: UoW, settings: SettingsDep,
                 who: SignedInDep) -> JSONResponse:
    event = access.get_event(uow, who.caller, event_id)
    upload = chunked_uploads.get_upload(uow, event.id, upload_id, lock=True)
    _queue_assembly(uow, upload, request.app.state.celery)  # complete, or a stale assembly
    return JSONResponse(_state(upload, settings))


async def _read_body(request: Request, limit: int) -> bytes:
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"A piece is at most {limit} bytes.", code="piece_too_large")
        parts.append(chunk)
    return b"".join(parts)


@router.put("/dashboard/events/{event_id}/uploads/{upload_id}")
async def put_piece(event_id: str, upload_id: str, offset: int, request: Request, uow: UoW,
                    settings: SettingsDep, store: StoreDep, who: PostDep) -> JSONResponse:
    data = await _read_body(request, chunked_uploads.MAX_CHUNK_BYTES)
    event = await run_in_threadpool(access.get_event, uow, who.caller, event_id)
    upload = await run_in_threadpool(chunked_uploads.get_upload, uow, event.id, upload_id, lock=True)
    try:
        await run_in_threadpool(chunked_uploads.put_piece, uow, store, upload, offset, data)
    except OffsetMismatch as exc:
        # the client lost a reply or a connection: it carries on from here
        return JSONResponse({**_state(upload, settings), "code": exc.code, "error": exc.detail}, status_code=409)
    await run_in_threadpool(_queue_assembly, uow, upload, request.app.state.celery)  # after the last piece
    return JSONResponse(_state(upload, settings))
