"""The worker's stage for photos: decode, find and embed faces, store them with previews.

Runs outside any request. The CNN work happens between two short transactions, so no database
lock is held while a network runs: claim (commit) -> analyse -> store results (commit).

What can go wrong, and what follows:
- the file is not a readable image (ImageDecodeError): `failed` at once, with the reason;
- anything else raised while reading, analysing or storing one photo (an OpenCV or torch error,
  an S3 error, a bug): that photo's attempt is recorded. It goes back to `pending`, showing the
  error, and the sweeper queues it again after stale_after; after `photo_max_attempts` it is
  `failed` with the reason. The other photos of the task are not held back: when the networks
  raise for a batch, its photos are analysed again one by one;
- the database or broker is down: the task raises and Celery retries it (the claim is the
  task's own, so the retry takes it back).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import BibRead, Face, Photo, PhotoStatus
from app.db.session import UnitOfWork, unit_of_work
from app.jobs import TaskSender
from app.services import matching
from app.services import photos as photo_service
from app.services import webhooks
from app.storage import PhotoStore
from models import bibs
from models.bib_reader import TextReader
from models.image import ImageDecodeError, render_jpeg
from models.pipeline import FaceResult, PhotoAnalysis, analyse_files
from models.types import Detection, FaceBackend

log = logging.getLogger(__name__)
PREVIEW_LONG_SIDE = 1600
THUMB_LONG_SIDE = 400


@dataclass(frozen=True)
class ProcessingContext:
    settings: Settings
    make_session: sessionmaker[Session]
    store: PhotoStore
    backend: FaceBackend
    sender: TaskSender
    bib_reader: TextReader | None = None  # None: bibs are not read (FINISHLINE_READ_BIBS=false)


@dataclass(frozen=True)
class _Claimed:
    storage_key: str
    event_id: str


def _local_file(stack: ExitStack, store: PhotoStore, key: str) -> Path:
    """The original as a local file until `stack` closes (S3: downloaded once, read twice)."""
    try:
        return Path(stack.enter_context(store.local_path(key)))
    except FileNotFoundError as exc:
        raise ImageDecodeError("missing_original", "the original file is missing from storage") from exc


def face_rows(photo_id: str, event_id: str, model_id: str, results: list[FaceResult]) -> list[Face]:
    return [
        Face(photo_id=photo_id, event_id=event_id, model_id=model_id,
             x1=r.box[0], y1=r.box[1], x2=r.box[2], y2=r.box[3], score=float(r.score),
             size_px=float(min(r.box[2] - r.box[0], r.box[3] - r.box[1])),
             landmarks=[[float(x), float(y)] for x, y in r.landmarks],
             embedding=np.asarray(r.embedding, dtype=np.float32).tobytes())
        for r in results
    ]


def bib_rows(photo_id: str, event_id: str, model_id: str, reads: list[bibs.BibRead],
             faces: list[Face]) -> list[BibRead]:
    """Rows for the reads; `faces` are the photo's face rows in the order the reader saw them."""
    return [
        BibRead(photo_id=photo_id, event_id=event_id, model_id=model_id, number=r.number,
                face_id=None if r.face is None else faces[r.face].id,
                x1=r.box[0], y1=r.box[1], x2=r.box[2], y2=r.box[3], score=r.score, text_px=r.text_px)
        for r in reads
    ]


def _read_bibs(ctx: ProcessingContext, photo_id: str, image: Image.Image, overview: Image.Image,
               faces: Sequence[Detection]) -> list[bibs.BibRead]:
    """The photo's bibs, read on its full-resolution decode after its faces were found: a torso
    region under each face (a read's `face` indexes them). A fault here is logged loudly and the
    photo keeps its faces, with no bibs."""
    try:
        return bibs.read_bibs(image, [f.box for f in faces], ctx.bib_reader,
                              whole_long_side=ctx.settings.bib_whole_long_side, overview=overview)
    except Exception:  # a reader fault must not lose the photo's faces
        log.exception("reading bibs failed on photo %s; it keeps its faces, no bibs", photo_id)
        return []


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


Analysis = PhotoAnalysis | ImageDecodeError


def analyse_batch(files: dict[str, Path], ctx: ProcessingContext,
                  reads: dict[str, list[bibs.BibRead]]) -> dict[str, Analysis | Exception]:
    """Faces per photo (models/pipeline.py: analyse_files), the batch through the networks
    together; if the batch raises, each photo alone, so one bad image costs only its own result.
    With a bib reader, each photo's bibs go into `reads` on the way (one full decode serves the
    face crops and the bibs)."""
    settings = ctx.settings

    def analyse(ids: list[str]) -> list[Analysis]:
        def read_bibs(i: int, image: Image.Image, overview: Image.Image, faces: list[Detection]) -> None:
            reads[ids[i]] = _read_bibs(ctx, ids[i], image, overview, faces)

        return analyse_files([files[i] for i in ids], ctx.backend, max_pixels=settings.max_image_pixels,
                             detect_long_side=settings.detect_long_side, min_face_px=settings.min_face_px,
                             use_full_image=read_bibs if ctx.bib_reader is not None else None)

    ids = list(files)
    try:
        return dict(zip(ids, analyse(ids)))
    except Exception as exc:
        if len(ids) == 1:
            return {ids[0]: exc}
        log.warning("a batch of %d photos failed (%s); analysing them one by one", len(ids), describe(exc))
    results: dict[str, Analysis | Exception] = {}
    for photo_id in ids:
        try:
            results[photo_id] = analyse([photo_id])[0]
        except Exception as exc:
            results[photo_id] = exc
    return results


def process_photos(ctx: ProcessingContext, photo_ids: list[str], *, task_id: str) -> dict[str, str]:
    """Process the given photos (one batch through the networks); returns each one's outcome."""
    settings = ctx.settings
    stale_after = timedelta(seconds=settings.stale_after_s)
    with unit_of_work(ctx.make_session) as uow:
        claimed: dict[str, _Claimed] = {}
        for photo_id in photo_ids:
            photo = photo_service.claim_photo(uow, photo_id, task_id=task_id, stale_after=stale_after,
                                              max_attempts=settings.photo_max_attempts)
            if photo is not None:
                claimed[photo.id] = _Claimed(photo.storage_key, photo.event_id)
    outcomes = {pid: "skipped" for pid in photo_ids if pid not in claimed}

    with ExitStack() as stack:
        files: dict[str, Path] = {}
        for photo_id, photo in claimed.items():
            try:
                files[photo_id] = _local_file(stack, ctx.store, photo.storage_key)
            except ImageDecodeError as exc:
                outcomes[photo_id] = _finish_failed(ctx, photo_id, task_id, f"{exc.code}: {exc.detail}")
            except Exception as exc:  # e.g. the object store answering an error
                outcomes[photo_id] = _attempt_failed(ctx, photo_id, task_id, exc)
        reads: dict[str, list[bibs.BibRead]] = {}
        analysed = analyse_batch(files, ctx, reads) if files else {}
    for photo_id, analysis in analysed.items():
        if isinstance(analysis, ImageDecodeError):
            outcomes[photo_id] = _finish_failed(ctx, photo_id, task_id, f"{analysis.code}: {analysis.detail}")
            continue
        if isinstance(analysis, Exception):
            outcomes[photo_id] = _attempt_failed(ctx, photo_id, task_id, analysis)
            continue
        try:
            outcomes[photo_id] = _store_results(ctx, photo_id, claimed[photo_id].event_id, analysis,
                                                reads.get(photo_id, []), task_id)
        except OperationalError:
            raise  # the database is down: Celery retries the task, which takes its claims back
        except Exception as exc:
            outcomes[photo_id] = _attempt_failed(ctx, photo_id, task_id, exc)
    return outcomes


def _store_results(ctx: ProcessingContext, photo_id: str, event_id: str, analysis: PhotoAnalysis,
                   reads: list[bibs.BibRead], task_id: str) -> str:
    """Previews from the detection image, then faces, bib reads, status and matches in one transaction."""
    preview_key = f"events/{event_id}/previews/{photo_id}.jpg"
    thumb_key = f"events/{event_id}/thumbs/{photo_id}.jpg"
    ctx.store.put_bytes(preview_key, render_jpeg(analysis.preview, PREVIEW_LONG_SIDE))
    ctx.store.put_bytes(thumb_key, render_jpeg(analysis.preview, THUMB_LONG_SIDE))
    width, height = analysis.size
    with unit_of_work(ctx.make_session, ctx.sender) as uow:
        # first statement: the conditional write that proves the claim is still ours
        photo = photo_service.mark_done(uow, photo_id, task_id=task_id, width=width, height=height,
                                        preview_key=preview_key, thumb_key=thumb_key)
        if photo is None:
            if uow.session.get(Photo, photo_id) is None:  # deleted (DELETE /photos or /events) meanwhile
                ctx.store.delete(preview_key)
                ctx.store.delete(thumb_key)
                return "deleted"
            return "lost_claim"  # our claim went stale and another task took over
        face_list = face_rows(photo_id, event_id, ctx.backend.model_id, analysis.faces)

        def replace() -> None:
            photo_service.replace_faces(uow, photo, face_list)
            if ctx.bib_reader is not None:
                uow.session.flush()  # face ids for the reads that belong to a face
                photo_service.replace_bib_reads(
                    uow, photo, bib_rows(photo_id, event_id, ctx.bib_reader.model_id, reads, face_list))

        reprocessed = bool(photo.face_count)
        if reprocessed:
            # reprocessed: its old faces, reads and matches go, and a bib link on them moves. The
            # event's exclusive lock first, the order every writer keeps (review C5): moving a link
            # bumps the event row, which a shared lock would have to upgrade, and two photos
            # upgrading at once deadlock. Reprocessing a done photo is rare; it may wait its turn.
            matching.lock_event(uow, event_id)
            matching.photo_faces_replaced(uow, event_id, photo_id, replace)
        else:
            replace()
        # its faces against the event's runners (shared event lock)
        matching.on_photo_done(uow, photo, first_faces=not reprocessed)
    _done_photo_finished(ctx, event_id)
    return "done"


def _done_photo_finished(ctx: ProcessingContext, event_id: str) -> None:
    """`event.processed`, checked after the photo's own commit: photos of one event finish under
    a shared lock (matching.py), so two last photos would each see the other still processing.
    Whichever check runs after both commits sees none busy and emits, under the exclusive lock."""
    with unit_of_work(ctx.make_session, ctx.sender) as uow:
        busy = uow.session.scalar(select(func.count()).select_from(Photo).where(
            Photo.event_id == event_id, Photo.status.in_((PhotoStatus.pending.value, PhotoStatus.processing.value))))
        if not busy:
            matching.lock_event(uow, event_id)
            webhooks.photos_finished(uow, event_id)


def _finish_failed(ctx: ProcessingContext, photo_id: str, task_id: str, error: str) -> str:
    with unit_of_work(ctx.make_session, ctx.sender) as uow:
        ours = photo_service.mark_failed(uow, photo_id, task_id=task_id, error=error)
        if ours:
            _failed_photo_finished(uow, photo_id)
        elif uow.session.get(Photo, photo_id) is None:
            return "deleted"  # deleted meanwhile, its original with it (hence the error)
    log.info("photo %s failed: %s", photo_id, error)
    return "failed" if ours else "lost_claim"


def _attempt_failed(ctx: ProcessingContext, photo_id: str, task_id: str, exc: Exception) -> str:
    log.error("photo %s: processing raised %s", photo_id, describe(exc), exc_info=exc)
    with unit_of_work(ctx.make_session, ctx.sender) as uow:
        status = photo_service.record_failed_attempt(uow, photo_id, task_id=task_id, error=describe(exc),
                                                     max_attempts=ctx.settings.photo_max_attempts)
        if status == "failed":
            _failed_photo_finished(uow, photo_id)
    if status == "failed":
        return "failed"
    return "retry_later" if status == "pending" else "lost_claim"


def _failed_photo_finished(uow: UnitOfWork, photo_id: str) -> None:
    """A photo failed for good: the event may now be fully processed (webhook `event.processed`)."""
    event_id = uow.session.get(Photo, photo_id).event_id
    matching.lock_event(uow, event_id)  # serialise with other photos finishing
    webhooks.photos_finished(uow, event_id)
