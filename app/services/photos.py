"""Photos: lookup, listing, deletion, and the state changes of processing (claim, done, failed, sweep)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select, update

from app.db import BibRead, Face, Photo, PhotoStatus, utcnow
from app.db.session import UnitOfWork
from app.errors import Conflict, NotFound
from app.services import matching
from app.storage import PhotoStore
from app.jobs import PROCESS_PHOTO
from models.bibs import canonical_bib


def get_photo(uow: UnitOfWork, photo_id: str) -> Photo:
    photo = uow.session.get(Photo, photo_id)
    if photo is None:
        raise NotFound(f"No photo with id {photo_id!r}.", code="photo_not_found")
    return photo


def faces_of(uow: UnitOfWork, photo_ids: list[str]) -> dict[str, list[Face]]:
    return _rows_by_photo(uow, Face, photo_ids)


def bib_reads_of(uow: UnitOfWork, photo_ids: list[str]) -> dict[str, list[BibRead]]:
    return _rows_by_photo(uow, BibRead, photo_ids)


def _rows_by_photo(uow: UnitOfWork, model: type[Face] | type[BibRead], photo_ids: list[str]) -> dict[str, list]:
    """The photos' faces or bib reads, left to right, in one query; every photo id has a list."""
    by_photo: dict[str, list] = {pid: [] for pid in photo_ids}
    if photo_ids:
        for row in uow.session.scalars(select(model).where(model.photo_id.in_(photo_ids)).order_by(model.x1)):
            by_photo[row.photo_id].append(row)
    return by_photo


def photo_with_bib(uow: UnitOfWork, event_id: str, number: str, photo_id: str) -> Photo:
    """The event's processed photo on which `number` was read (404 otherwise: never say which)."""
    photo = uow.session.scalar(
        select(Photo).where(Photo.id == photo_id, Photo.event_id == event_id, Photo.status == PhotoStatus.done.value,
                            Photo.id.in_(select(BibRead.photo_id).where(BibRead.number == canonical_bib(number)))))
    if photo is None:
        raise NotFound("No such image.", code="image_not_found")
    return photo


def list_photos(
    uow: UnitOfWork, event_id: str, *, status: str | None, limit: int, cursor: str | None,
    bib: str | None = None,
) -> tuple[list[Photo], str | None]:
    """A page of the event's photos; `bib`: only those on which that number was read."""
    query = select(Photo).where(Photo.event_id == event_id).order_by(Photo.id).limit(limit + 1)
    if status:
        query = query.where(Photo.status == status)
    if bib is not None:
        query = query.where(Photo.id.in_(
            select(BibRead.photo_id).where(BibRead.event_id == event_id, BibRead.number == canonical_bib(bib))))
    if cursor:
        query = query.where(Photo.id > cursor)
    photos = list(uow.session.scalars(query))
    next_cursor = photos[limit - 1].id if len(photos) > limit else None
    return photos[:limit], next_cursor


def delete_photo(uow: UnitOfWork, store: PhotoStore, photo: Photo) -> None:
    """The photo, its faces and matches (database cascade), then its files once committed.

    Other photos are matched again only for a start-list runner whose bib link (the face standing
    in for their selfie) was on this photo (`matching.photo_faces_replaced`).
    """
    keys = [k for k in (photo.storage_key, photo.preview_key, photo.thumb_key) if k]

    def remove_rows() -> None:
        uow.session.delete(photo)
        uow.session.flush()
        uow.session.expire_all()

    matching.photo_faces_replaced(uow, photo.event_id, photo.id, remove_rows)

    def remove_files() -> None:
        for key in keys:
            store.delete(key)

    uow.after_commit(remove_files)


def claim_photo(uow: UnitOfWork, photo_id: str, *, task_id: str, stale_after: timedelta,
                max_attempts: int) -> Photo | None:
    """Atomically take a photo for processing; None if it is done, failed, held by a live task, or
    out of attempts (the sweeper then marks it failed).

    A redelivered message carries the same task id and may take back its own claim at once;
    anyone else must wait until the claim is stale (its worker presumably died).
    """
    now = utcnow()
    claimed = uow.session.execute(
        update(Photo)
        .where(
            Photo.id == photo_id,
            Photo.attempts < max_attempts,
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


def replace_bib_reads(uow: UnitOfWork, photo: Photo, reads: list[BibRead]) -> None:
    """Like faces: reprocessing replaces the photo's bib reads."""
    uow.session.execute(delete(BibRead).where(BibRead.photo_id == photo.id))
    uow.session.add_all(reads)


def _finish(uow: UnitOfWork, photo_id: str, task_id: str, **values: object) -> Photo | None:
    """Write the outcome only while `task_id` still holds the claim, in one statement (the check
    and the write cannot be split by another task taking a stale claim over)."""
    won = uow.session.execute(
        update(Photo)
        .where(Photo.id == photo_id, Photo.status == PhotoStatus.processing.value, Photo.claimed_by == task_id)
        .values(claimed_by=None, **values)
        .execution_options(synchronize_session=False)
    )
    if won.rowcount != 1:
        return None
    return uow.session.get(Photo, photo_id, populate_existing=True)


def mark_done(uow: UnitOfWork, photo_id: str, *, task_id: str, width: int, height: int,
              preview_key: str | None, thumb_key: str | None) -> Photo | None:
    """done, if our claim holds; None when it went stale and another task took over."""
    return _finish(uow, photo_id, task_id, status=PhotoStatus.done.value, width=width, height=height,
                   preview_key=preview_key, thumb_key=thumb_key, error=None, processed_at=utcnow())


def mark_failed(uow: UnitOfWork, photo_id: str, *, task_id: str, error: str) -> bool:
    return _finish(uow, photo_id, task_id, status=PhotoStatus.failed.value, error=error[:2000],
                   processed_at=utcnow()) is not None


def record_failed_attempt(uow: UnitOfWork, photo_id: str, *, task_id: str, error: str,
                          max_attempts: int) -> str | None:
    """After an unexpected error: `failed` once the attempts are used up, else back to `pending`
    (with the error shown) for the sweeper to queue again after stale_after. None: not our claim."""
    photo = uow.session.get(Photo, photo_id)
    if photo is None or photo.claimed_by != task_id:
        return None
    if photo.attempts >= max_attempts:
        reason = f"processing_failed: {error} (after {photo.attempts} attempts)"
        return PhotoStatus.failed.value if mark_failed(uow, photo_id, task_id=task_id, error=reason) else None
    done = _finish(uow, photo_id, task_id, status=PhotoStatus.pending.value, claimed_at=None, queued_at=utcnow(),
                   error=f"attempt {photo.attempts} of {max_attempts} failed: {error}"[:2000])
    return PhotoStatus.pending.value if done is not None else None


def requeue_photo(uow: UnitOfWork, photo: Photo) -> None:
    """Back to `pending` with a fresh attempt budget; the caller sends PROCESS_PHOTO after commit."""
    photo.status = PhotoStatus.pending.value
    photo.error = None
    photo.attempts = 0
    photo.claimed_by = None
    photo.claimed_at = None
    photo.processed_at = None
    photo.queued_at = utcnow()


def retry_photo(uow: UnitOfWork, photo: Photo) -> Photo:
    """An organiser's "try again" for a failed photo (e.g. after fixing storage or a worker)."""
    if photo.status != PhotoStatus.failed.value:
        raise Conflict(f"Photo {photo.id!r} is {photo.status}; only failed photos can be retried.",
                       code="photo_not_failed")
    requeue_photo(uow, photo)
    uow.send_task(PROCESS_PHOTO, photo.id)
    return photo


@dataclass(frozen=True)
class SweepResult:
    requeued: list[str]
    failed: list[str]


def sweep_stale_photos(uow: UnitOfWork, *, stale_after: timedelta, max_attempts: int,
                       backlog: bool = False, limit: int = 500) -> SweepResult:
    """Re-queue photos whose message was lost (pending too long) or whose worker died (claim stale);
    a photo whose worker died on every one of its attempts (it may crash the networks) is failed.

    `backlog`: the photo queue still holds messages. Then a photo pending for long is most likely
    waiting its turn (100k photos take hours), not lost, so pending photos are left alone until the
    queue has drained; stale claims are still re-queued. Each re-queue refreshes `queued_at`, and a
    duplicate message costs one failed claim.
    """
    cutoff = utcnow() - stale_after
    abandoned = (Photo.status == PhotoStatus.processing.value) & (Photo.claimed_at < cutoff)
    exhausted = list(uow.session.scalars(
        select(Photo).where(abandoned, Photo.attempts >= max_attempts).limit(limit)
    ))
    for photo in exhausted:
        photo.status, photo.claimed_by, photo.processed_at = PhotoStatus.failed.value, None, utcnow()
        photo.error = (f"processing_failed: the worker stopped while processing this photo, "
                       f"{photo.attempts} times (it may crash the face networks)")
    retry = abandoned & (Photo.attempts < max_attempts)
    if not backlog:
        retry = or_(Photo.status == PhotoStatus.pending.value, retry)
    stale = select(Photo.id).where(Photo.queued_at < cutoff, retry).order_by(Photo.queued_at).limit(limit)
    ids = list(uow.session.scalars(stale))
    if ids:
        uow.session.execute(
            update(Photo).where(Photo.id.in_(ids)).values(queued_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        for photo_id in ids:
            uow.send_task(PROCESS_PHOTO, photo_id)
    return SweepResult(ids, [p.id for p in exhausted])


def failed_photos(uow: UnitOfWork, event_id: str, *, limit: int = 100) -> list[Photo]:
    return list(uow.session.scalars(
        select(Photo).where(Photo.event_id == event_id, Photo.status == PhotoStatus.failed.value)
        .order_by(Photo.processed_at.desc(), Photo.id).limit(limit)))
