"""Photos: lookup, listing, deletion, and the state changes of processing (claim, done, failed, sweep)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select, update

from app.db import Face, Photo, PhotoStatus, utcnow
from app.db.session import UnitOfWork
from app.errors import NotFound
from app.storage import PhotoStore
from worker.dispatch import PROCESS_PHOTO


def get_photo(uow: UnitOfWork, photo_id: str) -> Photo:
    photo = uow.session.get(Photo, photo_id)
    if photo is None:
        raise NotFound(f"No photo with id {photo_id!r}.", code="photo_not_found")
    return photo


def faces_of(uow: UnitOfWork, photo_ids: list[str]) -> dict[str, list[Face]]:
    faces: dict[str, list[Face]] = {pid: [] for pid in photo_ids}
    if photo_ids:
        rows = uow.session.scalars(select(Face).where(Face.photo_id.in_(photo_ids)).order_by(Face.x1))
        for face in rows:
            faces[face.photo_id].append(face)
    return faces


def list_photos(
    uow: UnitOfWork, event_id: str, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Photo], str | None]:
    query = select(Photo).where(Photo.event_id == event_id).order_by(Photo.id).limit(limit + 1)
    if status:
        query = query.where(Photo.status == status)
    if cursor:
        query = query.where(Photo.id > cursor)
    photos = list(uow.session.scalars(query))
    next_cursor = photos[limit - 1].id if len(photos) > limit else None
    return photos[:limit], next_cursor


def delete_photo(uow: UnitOfWork, store: PhotoStore, photo: Photo) -> None:
    """The photo, its faces and matches (database cascade), then its files once committed.

    No rematch: a photo's matches never depend on another photo's faces.
    """
    keys = [k for k in (photo.storage_key, photo.preview_key, photo.thumb_key) if k]
    uow.session.delete(photo)
    uow.session.flush()
    uow.session.expire_all()

    def remove_files() -> None:
        for key in keys:
            store.delete(key)

    uow.after_commit(remove_files)


def claim_photo(uow: UnitOfWork, photo_id: str, *, task_id: str, stale_after: timedelta) -> Photo | None:
    """Atomically take a photo for processing; None if it is done, failed or held by a live task.

    A redelivered message carries the same task id and may take back its own claim at once;
    anyone else must wait until the claim is stale (its worker presumably died).
    """
    now = utcnow()
    claimed = uow.session.execute(
        update(Photo)
        .where(
            Photo.id == photo_id,
            or_(
                Photo.status == PhotoStatus.pending.value,
                (Photo.status == PhotoStatus.processing.value)
                & or_(Photo.claimed_by == task_id, Photo.claimed_at < now - stale_after),
            ),
        )
        .values(status=PhotoStatus.processing.value, claimed_at=now, claimed_by=task_id,
                attempts=Photo.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return None
    return uow.session.get(Photo, photo_id, populate_existing=True)


def replace_faces(uow: UnitOfWork, photo: Photo, faces: list[Face]) -> None:
    """Reprocessing replaces a photo's faces (and so their matches), never duplicates them."""
    uow.session.execute(delete(Face).where(Face.photo_id == photo.id))
    uow.session.add_all(faces)
    photo.face_count = len(faces)  # event stats sum these instead of counting faces


def mark_done(uow: UnitOfWork, photo: Photo, *, width: int, height: int,
              preview_key: str | None, thumb_key: str | None) -> None:
    photo.status = PhotoStatus.done.value
    photo.width, photo.height = width, height
    photo.preview_key, photo.thumb_key = preview_key, thumb_key
    photo.error = None
    photo.processed_at = utcnow()
    photo.claimed_by = None


def mark_failed(uow: UnitOfWork, photo: Photo, error: str) -> None:
    photo.status = PhotoStatus.failed.value
    photo.error = error[:2000]
    photo.processed_at = utcnow()
    photo.claimed_by = None


@dataclass(frozen=True)
class SweepResult:
    requeued: list[str]


def sweep_stale_photos(uow: UnitOfWork, *, stale_after: timedelta, limit: int = 500) -> SweepResult:
    """Re-queue photos whose message was lost (pending too long) or whose worker died (claim stale).

    Each re-queue refreshes `queued_at`, so a long backlog is re-sent at most once per period;
    a duplicate message costs one failed claim.
    """
    cutoff = utcnow() - stale_after
    stale = select(Photo.id).where(
        Photo.queued_at < cutoff,
        or_(
            Photo.status == PhotoStatus.pending.value,
            (Photo.status == PhotoStatus.processing.value) & (Photo.claimed_at < cutoff),
        ),
    ).order_by(Photo.queued_at).limit(limit)
    ids = list(uow.session.scalars(stale))
    if ids:
        uow.session.execute(
            update(Photo).where(Photo.id.in_(ids)).values(queued_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        for photo_id in ids:
            uow.send_task(PROCESS_PHOTO, photo_id)
    return SweepResult(ids)
