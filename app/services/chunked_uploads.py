"""Resumable uploads for the dashboard: one file in pieces, each piece stored as it arrives.

    start  -> an UploadSession (filename, size), offset 0
    put    -> the piece at `offset` goes to the photo store (events/{event}/uploads/{id}/{offset}); the
              session's offset moves on. A piece for the wrong offset answers the right one
              (409), so a client that lost a reply, a connection or its tab just carries on.
    finish -> once every byte is there the upload is `assembling` and ASSEMBLE_UPLOAD is queued;
              the worker reads the pieces back in order as one stream through the same Uploader
              as the API (each file becomes a photo or a rejection; zips are expanded there, never
              in the API) and records the report: `done`.

Pieces live in the store, not on one API machine's disk, so any instance takes the next piece and
any worker assembles them. An assembly whose worker died (or whose message was lost) is queued
again once `assembling` has not moved for STALE_FINISH: by the sweeper, or by the page's next poll.
So is one that failed (the store raising); after MAX_ASSEMBLY_ATTEMPTS tries it ends `failed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select, update

from app.db import UploadSession, utcnow
from app.db.session import UnitOfWork
from app.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from app.jobs import ASSEMBLE_UPLOAD
from app.services.uploads import Uploader, UploadLimits
from app.storage import PhotoStore

log = logging.getLogger(__name__)
MAX_CHUNK_BYTES = 32 * 2**20
MISSING_PIECE = "Part of this upload is missing from storage, so it cannot be put together: upload the file again."
# Each start of an assembly counts (the first, then each re-queue of a stale one), so one whose
# store keeps failing, or that kills its worker, ends `failed` instead of being tried for ever.
MAX_ASSEMBLY_ATTEMPTS = 3
GAVE_UP = ("This upload could not be put together: it failed {attempts} times (storage or the worker kept "
           "failing). Please upload the file again.")
# an assembly that died with its worker may be taken over after this long; a running one
# refreshes `updated_at` every HEARTBEAT, so however large the file, it never looks stale
STALE_FINISH = timedelta(minutes=15)
HEARTBEAT = timedelta(minutes=1)


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


def ready_to_assemble(upload: UploadSession) -> bool:
    """Complete and not claimed yet, or claimed by an assembly that went stale."""
    stale = upload.status == "assembling" and upload.updated_at < utcnow() - STALE_FINISH
    return upload.status == "complete" or stale


def claim_finish(uow: UnitOfWork, upload: UploadSession) -> bool:
    """Queue the assembly of a complete upload (or of a stale one) after commit; call with the
    upload locked. Only one caller claims it; the others see `assembling` and poll."""
    if ready_to_assemble(upload):
        upload.status = "assembling"
        upload.updated_at = utcnow()
        uow.send_task(ASSEMBLE_UPLOAD, upload.id, upload.event_id)
        return True
    return False


def sweep_stale_assemblies(uow: UnitOfWork, *, limit: int = 200) -> list[str]:
    """Queue ASSEMBLE_UPLOAD again for uploads `assembling` past STALE_FINISH (the worker died, the
    message was lost, the broker was down when it was sent); for the sweeper."""
    stuck = uow.session.scalars(
        select(UploadSession).where(UploadSession.status == "assembling",
                                    UploadSession.updated_at < utcnow() - STALE_FINISH)
        .order_by(UploadSession.updated_at).limit(limit).with_for_update(skip_locked=True))
    return [upload.id for upload in list(stuck) if claim_finish(uow, upload)]


class _Pieces:
    """The stored pieces read back in order as one file-like stream."""

    def __init__(self, store: PhotoStore, upload: UploadSession, on_next: Callable[[], None]) -> None:
        self.keys = [_piece_key(upload, offset) for offset in upload.chunks]
        self.store, self.on_next = store, on_next
        self.current: BinaryIO | None = None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self.current is None:
                if not self.keys:
                    return b""
                self.on_next()
                self.current = self.store.open(self.keys.pop(0))
            data = self.current.read(n)
            if data:
                return data
            self.current.close()
            self.current = None


class _Heartbeat:
    """Refreshes a running assembly's `updated_at` at most every HEARTBEAT, in its own short unit
    of work, so neither the sweeper nor a poll takes over an assembly that is merely long."""

    def __init__(self, open_uow: Callable[[], AbstractContextManager[UnitOfWork]], upload_id: str) -> None:
        self.open_uow, self.upload_id = open_uow, upload_id
        self.last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last < HEARTBEAT.total_seconds():
            return
        self.last = time.monotonic()
        with self.open_uow() as uow:
            uow.session.execute(update(UploadSession)
                                .where(UploadSession.id == self.upload_id, UploadSession.status == "assembling")
                                .values(updated_at=utcnow()))

    def opening(self, open_uow: Callable[[], AbstractContextManager[UnitOfWork]]
                ) -> Callable[[], AbstractContextManager[UnitOfWork]]:
        """`open_uow`, beating first: the Uploader opens one unit of work per photo."""
        def open_and_beat() -> AbstractContextManager[UnitOfWork]:
            self()
            return open_uow()
        return open_and_beat


def assemble(open_uow: Callable[[], AbstractContextManager[UnitOfWork]], store: PhotoStore,
             staging_dir: Path, limits: UploadLimits, upload_id: str, event_id: str,
             photos_per_task: int = 1) -> dict | None:
    """Run the finished file through the Uploader, record its report, drop the pieces (ASSEMBLE_UPLOAD).

    Opens its own units of work (the Uploader commits photo by photo). Safe to repeat: an upload
    that is not `assembling` (done already, or its event deleted) is left alone (None), and after
    a crash mid-way the photos already stored are recognised by their bytes. A try that fails is
    left `assembling` (None) for the sweeper to queue again once stale, STALE_FINISH later; the
    last of MAX_ASSEMBLY_ATTEMPTS ends it `failed`.
    """
    with open_uow() as uow:
        upload = uow.session.get(UploadSession, upload_id)
        if upload is None or upload.event_id != event_id or upload.status != "assembling":
            return None
        upload.attempts += 1  # committed before the work, so a try that dies with its worker counts
        attempt = upload.attempts
        beat = _Heartbeat(open_uow, upload_id)
        filename, pieces = upload.filename, _Pieces(store, upload, beat)
        keys = list(pieces.keys)
    uploader = Uploader(beat.opening(open_uow), store, staging_dir, limits, event_id,
                        photos_per_task=photos_per_task)
    status, error = "done", None
    if attempt > MAX_ASSEMBLY_ATTEMPTS:  # the last tries died with their worker: this file may kill it
        status, error = "failed", GAVE_UP.format(attempts=attempt - 1)
    else:
        try:
            uploader.add_file(filename, pieces)
        except FileNotFoundError:  # a piece is gone from the store: no retry brings it back
            status, error = "failed", MISSING_PIECE
        except Exception as exc:  # the store or the database failing: maybe not next time
            if attempt < MAX_ASSEMBLY_ATTEMPTS:
                log.warning("upload %s: try %d of %d failed (%r); the sweeper queues it again",
                            upload_id, attempt, MAX_ASSEMBLY_ATTEMPTS, exc)
                uploader.finish()  # the photos stored before it are processed meanwhile
                return None
            log.error("upload %s: try %d of %d failed (%r); giving up", upload_id, attempt,
                      MAX_ASSEMBLY_ATTEMPTS, exc)
            status, error = "failed", GAVE_UP.format(attempts=attempt)
    uploader.finish()
    report = {"photos": [asdict(p) for p in uploader.report.photos],
              "rejected": [asdict(r) for r in uploader.report.rejected]}
    if error:
        report["error"] = error
    with open_uow() as uow:
        upload = uow.session.get(UploadSession, upload_id, with_for_update=True)
        if upload is not None:  # None: the event was deleted meanwhile, its pieces with it
            upload.status, upload.result, upload.updated_at = status, report, utcnow()
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
