"""Uploads: every file either becomes a photo or a `rejected` entry with a reason.

Files are written to a staging file as their bytes arrive, hashed on the way (`StagedFile`; the
API's multipart parts go straight in, app/api/upload_body.py), so neither a 40 MB photo nor a
2 GB zip is ever held in memory whole, nor copied to disk twice. Zips are expanded here, one
member at a time, with limits on sizes and compression ratio (zip bombs); member names are only
ever displayed, never used as paths (zip-slip). Each new photo is queued for the worker once the
transaction commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager

from PIL import Image, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.db import Photo, PhotoStatus, new_id, utcnow
from app.db.session import UnitOfWork
from app.services import photos as photo_service
from app.services.zip_directory import read_directory
from app.storage import PhotoStore
from app.jobs import PROCESS_PHOTO

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"PK\x03\x04": "zip", b"PK\x05\x06": "zip"}
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_image_pixels: int
    max_archive_bytes: int = 16 * 2**30  # total uncompressed bytes read from one zip
    max_archive_entries: int = 50_000
    max_compression_ratio: float = 100.0  # photos barely compress; more than this is a bomb

    # What a zip's central directory may hold before it is opened (zipfile parses all of it at
    # once). Twice the files that are read, for the folders and the `__MACOSX/._` twin macOS adds
    # to every file (both skipped), plus room to say how many files were left out; past that
    # the archive is refused whole. 512 bytes an entry is far more than a name and extras need.
    @property
    def max_directory_entries(self) -> int:
        return 2 * self.max_archive_entries + 1024

    @property
    def max_directory_bytes(self) -> int:
        return 512 * self.max_directory_entries


def upload_limits(settings: Settings) -> UploadLimits:
    """The limits of every way in: the API, the dashboard form, and the worker assembling an upload."""
    return UploadLimits(max_file_bytes=settings.max_file_bytes, max_image_pixels=settings.max_image_pixels,
                        max_archive_bytes=settings.max_archive_bytes,
                        max_compression_ratio=settings.max_compression_ratio,
                        max_archive_entries=settings.max_archive_entries)


@dataclass(frozen=True)
class UploadedPhoto:
    id: str
    filename: str
    status: str
    duplicate: bool


@dataclass(frozen=True)
class Rejection:
    filename: str
    code: str
    detail: str


@dataclass
class UploadReport:
    photos: list[UploadedPhoto] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def clean_filename(name: str) -> str:
    """A display name (never used as a path): printable, no empty/`.`/`..` parts, bounded length.

    Folders are kept (`camera2.zip/km5/001.jpg` tells an organiser where a photo came from).
    """
    parts = name.replace("\\", "/").split("/")
    parts = ["".join(ch for ch in part if ch.isprintable()).strip() for part in parts]
    cleaned = "/".join(part for part in parts if part not in ("", ".", ".."))
    return cleaned[-255:] or "unnamed"


def sniff(head: bytes) -> str | None:
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


class StagedFile:
    """One file written to the staging dir as its bytes arrive, hashed on the way.

    Past `max_bytes` (or `max_zip_bytes`, once the first bytes show a zip, so a 5 GB "photo" stops
    at the photo limit) what was written is dropped and later bytes are ignored: `too_large` is
    then the limit it broke, so a file never takes more disk than it may. `close()` once the last
    byte is in; `discard()` (repeatable) removes the file.
    """

    def __init__(self, staging_dir: Path, max_bytes: int, max_zip_bytes: int | None = None) -> None:
        staging_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=staging_dir, prefix="upload-")
        self.path, self._out = Path(name), os.fdopen(fd, "wb")
        self._max_bytes, self._max_zip_bytes = max_bytes, max_zip_bytes
        self._digest, self._head = hashlib.sha256(), b""
        self.size, self.sha256 = 0, ""  # the digest once closed
        self.too_large: int | None = None

    @property
    def kind(self) -> str | None:
        return sniff(self._head)

    def write(self, chunk: bytes) -> None:
        if self.too_large is not None or not chunk:
            return
        if len(self._head) < 16:
            self._head += chunk[:16 - len(self._head)]
            if self._max_zip_bytes is not None and len(self._head) >= 4 and sniff(self._head) == "zip":
                self._max_bytes, self._max_zip_bytes = self._max_zip_bytes, None
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.too_large = self._max_bytes
            self.discard()
            return
        self._digest.update(chunk)
        self._out.write(chunk)

    def close(self) -> None:
        self._out.close()
        self.sha256 = self._digest.hexdigest()

    def discard(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)


def _stage(stream: BinaryIO, staged: StagedFile) -> StagedFile:
    """Copy `stream` into `staged` until its end or the file's limit (a bomb is not read further)."""
    try:
        while staged.too_large is None and (chunk := stream.read(CHUNK)):
            staged.write(chunk)
        staged.close()
    except BaseException:
        staged.discard()
        raise
    return staged


def _image_header(path: Path, kind: str) -> tuple[int, int]:
    """Width and height from the header only (cheap); raises on a file Pillow cannot identify.

    Only the sniffed format's decoder is tried, and Pillow's own bomb warning is silenced: we
    compare the size with our own limit (its hard error, at 2x its limit, is still caught).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path, formats=[kind.upper()]) as img:
            return img.size


class Uploader:
    """Turns the files of one upload request into photos and rejections for one event.

    Each photo is committed in its own short transaction (`open_uow`), not one per request: a
    2 GB zip takes minutes to expand, and one long write transaction would lock SQLite against
    the workers meanwhile. It also means photos already stored survive a failure later on.
    """

    def __init__(self, open_uow: Callable[[], ContextManager[UnitOfWork]], store: PhotoStore,
                 staging_dir: Path, limits: UploadLimits, event_id: str, *, photos_per_task: int = 1) -> None:
        self.open_uow, self.store, self.staging_dir = open_uow, store, staging_dir
        self.limits, self.event_id = limits, event_id
        self.report = UploadReport()
        # Several photos per task let a GPU worker batch them through the networks together.
        # Ids not sent yet (the request died) are re-queued by the sweeper.
        self.photos_per_task = photos_per_task
        self._unsent: list[str] = []

    def finish(self) -> None:
        """Queue the photos still waiting for a full task; call once after the last file."""
        if self._unsent:
            ids, self._unsent = self._unsent, []
            with self.open_uow() as uow:
                uow.send_task(PROCESS_PHOTO, ids[0] if len(ids) == 1 else ids)

    def reject(self, filename: str, code: str, detail: str) -> None:
        self.report.rejected.append(Rejection(filename, code, detail))

    def new_file(self) -> StagedFile:
        """A staging file with the limits of one uploaded file: a photo is bounded by
        max_file_bytes; a zip may be as large as it may expand to."""
        return StagedFile(self.staging_dir, self.limits.max_file_bytes,
                          max_zip_bytes=max(self.limits.max_file_bytes, self.limits.max_archive_bytes))

    def add_file(self, filename: str, stream: BinaryIO) -> None:
        """The file `stream` reads (to its end): staged here, then as `add_staged`."""
        self.add_staged(filename, _stage(stream, self.new_file()))

    def add_all_staged(self, files: list[tuple[str, StagedFile]]) -> None:
        """Every file of a streamed request (`upload_body.read_files`), then `finish`; every
        staging file is removed, those not reached when something failed included."""
        try:
            for filename, staged in files:
                self.add_staged(filename, staged)
            self.finish()
        finally:
            for _, staged in files:
                staged.discard()

    def add_staged(self, filename: str, staged: StagedFile) -> None:
        """A file the caller wrote into `new_file()` and closed (the API streams parts into it);
        its staging file is removed once it is a photo or a rejection."""
        self._add(clean_filename(filename), staged, in_archive=False)

    def _add(self, display: str, staged: StagedFile, *, in_archive: bool) -> None:
        try:
            if staged.too_large is not None:
                self.reject(display, "file_too_large", f"larger than {staged.too_large} bytes")
            elif staged.kind == "zip" and in_archive:
                self.reject(display, "nested_archive", "zips inside zips are not expanded")
            elif staged.kind == "zip":
                self._add_archive(display, staged.path)
            else:
                self._add_staged_image(display, staged)
        finally:
            staged.discard()

    def _add_archive(self, archive_name: str, path: Path) -> None:
        if not self._directory_fits(archive_name, path):
            return
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            self.reject(archive_name, "corrupt_archive", f"not a readable zip archive: {exc}")
            return
        with archive:
            total = 0
            members = [m for m in archive.infolist() if not m.is_dir() and not _is_hidden(m.filename)]
            for index, member in enumerate(members):
                display = clean_filename(f"{archive_name}/{member.filename}")
                if index >= self.limits.max_archive_entries:
                    # one entry for the rest: a million-entry zip must not make a million-line answer
                    self.reject(display, "archive_too_many_files",
                                f"this and {len(members) - index - 1} more files were not read: only the "
                                f"first {self.limits.max_archive_entries} files of an archive are")
                    break
                if member.flag_bits & 0x1:
                    self.reject(display, "encrypted_entry", "encrypted zip entries are not supported")
                    continue
                if member.file_size > self.limits.max_file_bytes:
                    self.reject(display, "file_too_large", f"larger than {self.limits.max_file_bytes} bytes")
                    continue
                ratio = member.file_size / max(member.compress_size, 1)
                if member.file_size > CHUNK and ratio > self.limits.max_compression_ratio:
                    self.reject(display, "suspicious_compression",
                                f"compressed {ratio:.0f}:1, more than photos ever are (zip bomb?)")
                    continue
                if total + member.file_size > self.limits.max_archive_bytes:
                    self.reject(display, "archive_too_large",
                                f"archive expands past {self.limits.max_archive_bytes} bytes")
                    continue
                total += member.file_size
                self._add_archive_member(archive, member, display)

    def _directory_fits(self, archive_name: str, path: Path) -> bool:
        """Refuse, before zipfile reads it into memory, a central directory past the limits."""
        directory = read_directory(path, max_bytes=self.limits.max_directory_bytes)
        if directory is None:
            return True  # no end record: zipfile says it is no zip (corrupt_archive)
        if directory.entries > self.limits.max_directory_entries:
            self.reject(archive_name, "archive_too_many_files",
                        f"the archive lists {directory.entries} entries: only the first "
                        f"{self.limits.max_archive_entries} files of an archive are read, and one listing more "
                        f"than {self.limits.max_directory_entries} entries is not opened; split it into smaller zips")
            return False
        if directory.size > self.limits.max_directory_bytes:
            self.reject(archive_name, "archive_too_large",
                        f"the archive's table of contents is {directory.size} bytes, more than the "
                        f"{self.limits.max_directory_bytes} it may be; it is not opened")
            return False
        return True

    def _add_archive_member(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo, display: str) -> None:
        try:
            with archive.open(member) as stream:
                staged = _stage(stream, StagedFile(self.staging_dir, self.limits.max_file_bytes))
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
            self.reject(display, "corrupt_archive_entry", f"could not be extracted: {exc}")
            return
        self._add(display, staged, in_archive=True)

    def _add_staged_image(self, display: str, staged: StagedFile) -> None:
        if staged.size == 0:
            self.reject(display, "empty_file", "the file is empty")
            return
        if staged.size > self.limits.max_file_bytes:
            self.reject(display, "file_too_large", f"larger than {self.limits.max_file_bytes} bytes")
            return
        if staged.kind not in CONTENT_TYPES:
            self.reject(display, "unsupported_type", "not a JPEG, PNG or ZIP file")
            return
        try:
            width, height = _image_header(staged.path, staged.kind)
        except Image.DecompressionBombError:
            self.reject(display, "image_too_large", "the image has far too many pixels")
            return
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
                struct.error) as exc:  # what Pillow raises for headers it cannot make sense of
            self.reject(display, "not_an_image", f"not a readable {staged.kind.upper()} image: {exc}")
            return
        if width <= 0 or height <= 0:
            self.reject(display, "not_an_image", f"invalid image size {width}x{height}")
            return
        if width * height > self.limits.max_image_pixels:
            self.reject(display, "image_too_large",
                        f"{width}x{height} is more than {self.limits.max_image_pixels} pixels")
            return
        self._save_photo(display, staged)

    def _save_photo(self, display: str, staged: StagedFile) -> None:
        try:
            with self.open_uow() as uow:
                result = self._insert_photo(uow, display, staged)
        except _StoreFailed as exc:  # nothing was committed: the same upload later simply works
            log.error("could not store %s: %r", display, exc.__cause__)
            self.reject(display, "storage_failed", "the file could not be stored; please upload it again")
            return
        self.report.photos.append(result)
        if len(self._unsent) >= self.photos_per_task:
            self.finish()

    def _insert_photo(self, uow: UnitOfWork, display: str, staged: StagedFile) -> UploadedPhoto:
        existing = _find_duplicate(uow, self.event_id, staged.sha256)
        if existing is None:
            photo = Photo(id=new_id(), event_id=self.event_id, filename=display, sha256=staged.sha256,
                          size_bytes=staged.size, content_type=CONTENT_TYPES[staged.kind],
                          status=PhotoStatus.pending.value, queued_at=utcnow())
            photo.storage_key = f"events/{self.event_id}/originals/{photo.id}.{staged.kind.replace('jpeg', 'jpg')}"
            # The file first, the row after it: on SQLite the RELEASE of the savepoint below commits
            # (pysqlite opens no transaction before a SAVEPOINT), so a row written first would stay
            # behind, `pending` and without its file, when storing fails.
            _put_file(self.store, photo.storage_key, staged.path)
            try:
                with uow.session.begin_nested():
                    uow.session.add(photo)
            except IntegrityError:  # the same bytes arrived in a concurrent request
                self.store.delete(photo.storage_key)
                existing = _find_duplicate(uow, self.event_id, staged.sha256)
            else:
                self._unsent.append(photo.id)
                return UploadedPhoto(photo.id, display, photo.status, False)
        assert existing is not None
        if _needs_its_bytes_again(self.store, existing):
            # A failed photo, or one whose original never reached the store: these bytes are
            # exactly the ones it lacks (same sha256), so store them and process it again.
            _put_file(self.store, existing.storage_key, staged.path)
            photo_service.requeue_photo(uow, existing)
            self._unsent.append(existing.id)
            return UploadedPhoto(existing.id, display, existing.status, False)
        return UploadedPhoto(existing.id, display, existing.status, True)


class _StoreFailed(Exception):
    pass


def _put_file(store: PhotoStore, key: str, path: Path) -> None:
    try:
        store.put_file(key, path)
    except Exception as exc:  # a full disk, a permission, an S3 error: all the same to the uploader
        raise _StoreFailed(key) from exc


def _needs_its_bytes_again(store: PhotoStore, photo: Photo) -> bool:
    if photo.status == PhotoStatus.failed.value:
        return True
    return photo.status == PhotoStatus.pending.value and not store.exists(photo.storage_key)


def _find_duplicate(uow: UnitOfWork, event_id: str, sha256: str) -> Photo | None:
    return uow.session.scalar(select(Photo).where(Photo.event_id == event_id, Photo.sha256 == sha256))


def _is_hidden(member_name: str) -> bool:
    """Dot-files and macOS resource forks that zip tools add beside real photos."""
    # `.` and `..` are path steps, not hidden names: a zip-slip name like ../../x.jpg is an
    # ordinary photo here (names are only displayed), not something to drop without a word.
    parts = [part for part in member_name.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)
