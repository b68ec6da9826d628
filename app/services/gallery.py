"""A runner's gallery: signed links, their matched photos, "not me", and a streamed zip.

Link shapes (e-mails use `gallery_url` and `delete_url`):
    /g/{gallery token}          the gallery, its images and zip under it
    /d/{delete token}           confirm, then erase the runner's data
Every image is looked up through the runner's matches, so a link never reaches another photo.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import select

from app.config import Settings
from app.db import Event, Match, MatchRejection, Photo, Runner
from app.db.session import UnitOfWork
from app.errors import NotFound
from app.services import matching, tokens
from app.storage import PhotoStore

READ_CHUNK = 1 << 20


def gallery_url(settings: Settings, runner_id: str) -> str:
    return f"{settings.public_base_url}/g/{tokens.make_token(settings.signing_keys, 'gallery', runner_id)}"


def delete_url(settings: Settings, runner_id: str) -> str:
    return f"{settings.public_base_url}/d/{tokens.make_token(settings.signing_keys, 'delete', runner_id)}"


def runner_for(uow: UnitOfWork, settings: Settings, purpose: tokens.Purpose, token: str) -> Runner:
    """The runner a link belongs to; the same NotFound for a forged, expired or erased one.

    A gallery link lives as long as its event's retention period, counted from when it was sent.
    """
    runner = uow.session.get(Runner, tokens.read_token(settings.signing_keys, purpose, token))
    if runner is None:
        raise NotFound("This link is not valid.", code="invalid_link")
    if purpose == "gallery":
        event = uow.session.get(Event, runner.event_id)
        tokens.read_token(settings.signing_keys, purpose, token, max_age=timedelta(days=event.retention_days))
    return runner


def matched_photos(uow: UnitOfWork, runner: Runner) -> list[Photo]:
    """The runner's photos, best match first."""
    return list(uow.session.scalars(
        select(Photo).join(Match, Match.photo_id == Photo.id)
        .where(Match.runner_id == runner.id).order_by(Match.similarity.desc().nulls_last(), Photo.id)
    ))


def matched_photo(uow: UnitOfWork, runner: Runner, photo_id: str) -> Photo:
    photo = uow.session.scalar(
        select(Photo).join(Match, Match.photo_id == Photo.id)
        .where(Match.runner_id == runner.id, Photo.id == photo_id)
    )
    if photo is None:
        raise NotFound("This photo is not in your gallery.", code="photo_not_found")
    return photo


def reject_photo(uow: UnitOfWork, runner: Runner, photo_id: str) -> None:
    """'Not me': the photo leaves the gallery for good; its face may go to someone else.

    Idempotent: a second click (a double submit, or a twin request racing this one) changes nothing.
    """
    if _rejected(uow, runner, photo_id):
        return
    photo = matched_photo(uow, runner, photo_id)
    event = matching.lock_event(uow, runner.event_id)
    if _rejected(uow, runner, photo.id):  # the twin committed while we waited for the lock
        return
    uow.session.add(MatchRejection(runner_id=runner.id, photo_id=photo.id))
    uow.session.flush()
    matching.rematch_photos(uow, event, [photo.id])


def _rejected(uow: UnitOfWork, runner: Runner, photo_id: str) -> bool:
    return uow.session.scalar(select(MatchRejection.id).where(
        MatchRejection.runner_id == runner.id, MatchRejection.photo_id == photo_id)) is not None


def download_name(photo: Photo) -> str:
    """The upload's own file name without folders (zips and ingest keep them in `filename`)."""
    return posixpath.basename(photo.filename.replace("\\", "/")) or f"{photo.id}.jpg"


def read_chunks(store: PhotoStore, key: str) -> Iterator[bytes]:
    with store.open(key) as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


class _Buffer:
    """A write-only, unseekable file for ZipFile: what it writes is collected and drained."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_stream(store: PhotoStore, photos: list[Photo]) -> Iterator[bytes]:
    """A zip of the originals, produced while it is sent: memory stays at one chunk, not the zip.

    Stored, not deflated: JPEGs do not shrink, and the CPU is better spent elsewhere.
    """
    buffer = _Buffer()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for photo in photos:
            name = download_name(photo)
            if name in used:
                name = f"{photo.id}-{name}"
            used.add(name)
            with archive.open(name, "w", force_zip64=True) as entry:
                for chunk in read_chunks(store, photo.storage_key):
                    entry.write(chunk)
                    yield buffer.drain()
            yield buffer.drain()
    yield buffer.drain()
