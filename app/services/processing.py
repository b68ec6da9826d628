"""The worker's stage for photos: decode, find and embed faces, store them with previews.

Runs outside any request. The CNN work happens between two short transactions, so no database
lock is held while a network runs: claim (commit) -> analyse -> store results (commit).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import Face, Photo
from app.db.session import TaskSender, unit_of_work
from app.services import matching
from app.services import photos as photo_service
from app.storage import PhotoStore
from models.image import ImageDecodeError, render_jpeg
from models.pipeline import FaceResult, PhotoAnalysis, analyse_files
from models.types import FaceBackend

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


def process_photos(ctx: ProcessingContext, photo_ids: list[str], *, task_id: str) -> dict[str, str]:
    """Process the given photos (one batch through the networks); returns each one's outcome."""
    settings = ctx.settings
    stale_after = timedelta(seconds=settings.stale_after_s)
    with unit_of_work(ctx.make_session) as uow:
        claimed = {}
        for photo_id in photo_ids:
            photo = photo_service.claim_photo(uow, photo_id, task_id=task_id, stale_after=stale_after)
            if photo is not None:
                claimed[photo.id] = (photo.storage_key, photo.event_id)
    outcomes = {pid: "skipped" for pid in photo_ids if pid not in claimed}

    with ExitStack() as stack:
        files: dict[str, Path] = {}
        for photo_id, (key, _) in claimed.items():
            try:
                files[photo_id] = _local_file(stack, ctx.store, key)
            except ImageDecodeError as exc:
                outcomes[photo_id] = _finish_failed(ctx, photo_id, task_id, f"{exc.code}: {exc.detail}")
        analyses = analyse_files(list(files.values()), ctx.backend, max_pixels=settings.max_image_pixels,
                                 detect_long_side=settings.detect_long_side, min_face_px=settings.min_face_px)
    for photo_id, analysis in zip(list(files), analyses):
        if isinstance(analysis, ImageDecodeError):
            outcomes[photo_id] = _finish_failed(ctx, photo_id, task_id, f"{analysis.code}: {analysis.detail}")
            continue
        outcomes[photo_id] = _store_results(ctx, photo_id, claimed[photo_id][1], analysis, task_id)
    return outcomes


def _store_results(ctx: ProcessingContext, photo_id: str, event_id: str, analysis: PhotoAnalysis,
                   task_id: str) -> str:
    """Previews from the detection draft, then faces, status and matches in one transaction."""
    preview_key = f"events/{event_id}/previews/{photo_id}.jpg"
    thumb_key = f"events/{event_id}/thumbs/{photo_id}.jpg"
    ctx.store.put_bytes(preview_key, render_jpeg(analysis.preview, PREVIEW_LONG_SIDE))
    ctx.store.put_bytes(thumb_key, render_jpeg(analysis.preview, THUMB_LONG_SIDE))
    width, height = analysis.size
    with unit_of_work(ctx.make_session, ctx.sender) as uow:
        photo = uow.session.get(Photo, photo_id)
        if photo is None:  # deleted (DELETE /photos or /events) while the networks ran
            ctx.store.delete(preview_key)
            ctx.store.delete(thumb_key)
            return "deleted"
        if photo.claimed_by != task_id:  # our claim went stale and another task took over
            return "lost_claim"
        photo_service.replace_faces(uow, photo, face_rows(photo_id, event_id, ctx.backend.model_id, analysis.faces))
        photo_service.mark_done(uow, photo, width=width, height=height,
                                preview_key=preview_key, thumb_key=thumb_key)
        matching.on_photo_done(uow, photo)  # its faces against the event's runners
    return "done"


def _finish_failed(ctx: ProcessingContext, photo_id: str, task_id: str, error: str) -> str:
    """Mark the photo failed; "deleted" when it was deleted meanwhile (its original went with it)."""
    with unit_of_work(ctx.make_session) as uow:
        photo = uow.session.get(Photo, photo_id)
        if photo is None:
            return "deleted"
        if photo.claimed_by == task_id:
            photo_service.mark_failed(uow, photo, error)
    log.info("photo %s failed: %s", photo_id, error)
    return "failed"

