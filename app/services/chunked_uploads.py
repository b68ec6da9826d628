"""Resumable uploads for the dashboard: one file in pieces, each piece stored as it arrives.

    start  -> an UploadSession (filename, size), offset 0
    put    -> the piece at `offset` goes to the photo store (events/{event}/uploads/{id}/{offset}); the
              session's offset moves on. A piece for the wrong offset answers the right one
              (409), so a client that lost a reply, a connection or its tab just carries on.
    finish -> once every byte is there, the pieces are read back in order as one stream and go
              through the same Uploader as the API: each file becomes a photo or a rejection.

Pieces live in the store, not on one API machine's disk, so any instance takes the next piece.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from app.db import UploadSession, utcnow
from app.db.session import UnitOfWork
from app.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from app.services.uploads import Uploader, UploadLimits
from app.storage import PhotoStore

MAX_CHUNK_BYTES = 32 * 2**20
# a finish that died with its process (restart mid-way) may be taken over after this long
STALE_FINISH = timedelta(minutes=15)


def _piece_key(upload: UploadSession, offset: int) -> str:
    # under the event's prefix, so deleting the event deletes unfinished uploads too
    return f"events/{upload.event_id}/uploads/{upload.id}/{offset:015d}"


def start_upload(uow: UnitOfWork, *, event_id: str, filename: str, size: int, max_bytes: int) -> UploadSession:
    if size <= 0:
        raise Unprocessable("The file is empty.", code="empty_file")
    if size > max_bytes:
        raise PayloadTooLarge(f"The file is larger than {max_bytes} bytes.", code="file_too_large")
    upload = UploadSession(event_id=event_id, filename=filename[:500] or "unnamed", size_bytes=size,
                           received_bytes=0, chunks=[], status="receiving")
    uow.session.add(upload)
    uow.session.flush()
    return upload


def get_upload(uow: UnitOfWork, event_id: str, upload_id: str, *, lock: bool = False) -> UploadSession:
    query = select(UploadSession).where(UploadSession.id == upload_id, UploadSession.event_id == event_id)
    if lock:
        query = query.with_for_update()
    upload = uow.session.scalar(query)
    if upload is None:
        raise NotFound("No such upload.", code="upload_not_found")
    return upload


class OffsetMismatch(Conflict):
    """The piece is not the next one; `offset` says which byte the server wants next."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"Expected the piece at offset {offset}.", code="offset_mismatch")
        self.offset = offset


def put_piece(uow: UnitOfWork, store: PhotoStore, upload: UploadSession, offset: int, data: bytes) -> None:
    """Store the piece at `offset`; call with the upload locked (`get_upload(lock=True)`)."""
    if upload.status != "receiving" or offset != upload.received_bytes:
        raise OffsetMismatch(upload.received_bytes)
    if not data or len(data) > MAX_CHUNK_BYTES or offset + len(data) > upload.size_bytes:
        raise Unprocessable("The piece is empty, too large, or runs past the file's size.", code="bad_piece")
    store.put_bytes(_piece_key(upload, offset), data)
    upload.chunks = [*upload.chunks, offset]
    upload.received_bytes = offset + len(data)
    upload.updated_at = utcnow()
    if upload.received_bytes == upload.size_bytes:
        upload.status = "complete"


def claim_finish(uow: UnitOfWork, upload: UploadSession) -> bool:
    """Whether this request should assemble the file (one request does; others poll)."""
    stale = upload.status == "assembling" and upload.updated_at < utcnow() - STALE_FINISH
    if upload.status == "complete" or stale:
        upload.status = "assembling"
        upload.updated_at = utcnow()
        return True
    return False


class _Pieces:
    """The stored pieces read back in order as one file-like stream."""

    def __init__(self, store: PhotoStore, upload: UploadSession) -> None:
        self.keys = [_piece_key(upload, offset) for offset in upload.chunks]
        self.store = store
        self.current: BinaryIO | None = None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self.current is None:
                if not self.keys:
                    return b""
                self.current = self.store.open(self.keys.pop(0))
            data = self.current.read(n)
            if data:
                return data
            self.current.close()
            self.current = None


def assemble(open_uow: Callable[[], AbstractContextManager[UnitOfWork]], store: PhotoStore,
             staging_dir: Path, limits: UploadLimits, upload_id: str, event_id: str,
             photos_per_task: int = 1) -> dict:
    """Run the finished file through the Uploader, record its report, drop the pieces.

    Runs outside the request's transaction (the Uploader commits photo by photo); safe to
    repeat after a crash: photos are deduplicated by their bytes.
    """
    with open_uow() as uow:
        upload = get_upload(uow, event_id, upload_id)
        filename, pieces = upload.filename, _Pieces(store, upload)
        keys = list(pieces.keys)
    uploader = Uploader(open_uow, store, staging_dir, limits, event_id, photos_per_task=photos_per_task)
    uploader.add_file(filename, pieces)
    uploader.finish()
    report = {"photos": [asdict(p) for p in uploader.report.photos],
              "rejected": [asdict(r) for r in uploader.report.rejected]}
    with open_uow() as uow:
        upload = get_upload(uow, event_id, upload_id)
        upload.status, upload.result, upload.updated_at = "done", report, utcnow()
        uow.after_commit(lambda: [store.delete(key) for key in keys])
    return report


def recent_rejections(uow: UnitOfWork, event_id: str, limit: int = 50) -> list[dict]:
    """Files of this event's dashboard uploads that did not become photos, newest upload first."""
    rows = uow.session.scalars(
        select(UploadSession).where(UploadSession.event_id == event_id, UploadSession.status == "done")
        .order_by(UploadSession.id.desc()).limit(200))
    rejected: list[dict] = []
    for upload in rows:
        rejected.extend((upload.result or {}).get("rejected", []))
        if len(rejected) >= limit:
            break
    return rejected[:limit]


def record_report(uow: UnitOfWork, event_id: str, filename: str, size: int, report: dict) -> None:
    """Keep the report of a one-request upload (the dashboard form without script) beside the
    resumable ones, so its refused files are listed on the event page too."""
    uow.session.add(UploadSession(event_id=event_id, filename=filename[:500], size_bytes=size,
                                  received_bytes=size, chunks=[], status="done", result=report))


ABANDONED_AFTER = timedelta(days=7)


def expire_abandoned(uow: UnitOfWork, store: PhotoStore, *, older_than: timedelta = ABANDONED_AFTER,
                     limit: int = 200) -> int:
    """Drop uploads nobody carried on with for a week: their pieces would fill the store."""
    stale = list(uow.session.scalars(
        select(UploadSession).where(UploadSession.status == "receiving",
                                    UploadSession.updated_at < utcnow() - older_than).limit(limit)))
    for upload in stale:
        keys = [_piece_key(upload, offset) for offset in upload.chunks]
        uow.session.delete(upload)
        uow.after_commit(lambda keys=keys: [store.delete(key) for key in keys])
    return len(stale)
