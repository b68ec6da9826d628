"""An event's face embeddings for a new runner's search (matching.match_runner), without a
Python object per face: streamed as numpy chunks (`event_face_chunks`), and kept in memory per
matching worker (`FaceMatrixCache`) so that later runners only read what changed.

A million faces as ORM objects or even as row tuples cost seconds and gigabytes (issue 11:
7.3 s and 1.9 GB). On PostgreSQL the rows are streamed with COPY ... (FORMAT binary) and parsed
by numpy as fixed-size records, so no Python object is made per face and memory stays at one
chunk; elsewhere (SQLite, the embedded default) plain rows are fetched chunk by chunk.

Only matchable faces are held (`privacy.matchable_faces()`: not excluded by an erasure, template
not purged): a sync also drops the photos whose faces were excluded since the last one, and the
matrix of an event whose templates were purged (retention) is dropped at its next search.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import func, select

from app.db import Event, Face, Photo, PhotoStatus, utcnow
from app.db.session import UnitOfWork
from app.services import privacy

CHUNK_FACES = 4096  # 2 MB of 128-d float32 vectors per chunk: the transient memory of a build (a few MB)
_COPY_HEADER = 19  # PGCOPY signature (11), flags (4), header extension length (4)


def event_face_chunks(uow: UnitOfWork, event_id: str, model_id: str,
                      dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(photo ids, (n, dim) float32 matrix) chunks covering every face of the event and model."""
    if uow.session.get_bind().dialect.name == "postgresql":
        yield from _copy_chunks(uow, event_id, model_id, dim)
        return
    result = uow.session.execute(
        select(Face.photo_id, Face.embedding)
        .where(Face.event_id == event_id, Face.model_id == model_id, privacy.matchable_faces())
        .execution_options(yield_per=CHUNK_FACES)
    )
    for rows in result.partitions():
        photos = np.array([r[0] for r in rows], object)
        yield photos, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, dim)


def _copy_chunks(uow: UnitOfWork, event_id: str, model_id: str, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """COPY the (photo_id, embedding) pairs; every record has the same size because photo ids
    have one length (app.db.base.new_id) and embeddings `dim` float32s, checked per chunk."""
    cursor = uow.session.connection().connection.driver_connection.cursor()
    id_len = None
    buffer = bytearray()
    sql = ("COPY (SELECT photo_id, embedding FROM faces WHERE event_id = %s AND model_id = %s "
           "AND excluded_at IS NULL AND embedding IS NOT NULL) TO STDOUT (FORMAT binary)")  # privacy.matchable_faces
    with cursor.copy(sql, (event_id, model_id)) as copy:
        for block in copy:
            buffer += block
            if id_len is None and len(buffer) >= _COPY_HEADER + 6:
                id_len = int.from_bytes(buffer[_COPY_HEADER + 2:_COPY_HEADER + 6], "big")
            if id_len is not None and len(buffer) >= _COPY_HEADER + CHUNK_FACES * (10 + id_len + 4 * dim):
                yield _parse(buffer, id_len, dim, final=False)
    if id_len is not None:
        yield _parse(buffer, id_len, dim, final=True)


def _parse(buffer: bytearray, id_len: int, dim: int, *, final: bool) -> tuple[np.ndarray, np.ndarray]:
    """Whole records at the start of `buffer` (after the header) as arrays; consumes them."""
    record = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", f"S{id_len}"),
                       ("vec_len", ">i4"), ("vec", "<f4", (dim,))])
    body = len(buffer) - _COPY_HEADER - (2 if final else 0)  # the trailer is one int16 (-1)
    count = body // record.itemsize
    rows = np.frombuffer(buffer, record, count=count, offset=_COPY_HEADER)  # a view: the buffer is not copied
    if final and body != count * record.itemsize or not (
            np.all(rows["fields"] == 2) and np.all(rows["id_len"] == id_len) and np.all(rows["vec_len"] == 4 * dim)):
        raise ValueError("faces of unexpected shape in the COPY stream (photo id length or embedding size)")
    photo_ids, vectors = rows["id"].astype(str).astype(object), rows["vec"].copy()  # copies, even of one row
    del rows  # releases the view, so the buffer may shrink
    del buffer[_COPY_HEADER:_COPY_HEADER + count * record.itemsize]
    return photo_ids, vectors


# --- the per-process face matrix of an event (a new runner's search) ---------------------------

# Vectors are kept as int8 (x127): 128 MB per 1M faces, and searched 4x faster than fp16 would be
# (both are converted to float32 a few rows at a time; EventFaces.search). The rounding moves a cosine by 0.0023 (std; max 0.0104 in 100k faces),
# and by more than 0.04 with probability under 1e-11 (Hoeffding over the 256 rounding terms), so
# the bar is lowered by that; rematch_photos then decides from the stored float32 vectors.
SCALE = 127
INT8_MARGIN = 0.04
BLOCK_ROWS = 65_536  # the matrix grows a block at a time: 8 MB at 128 dimensions
SEARCH_ROWS = 4096  # rows multiplied at a time: 2 MB as float32 at 128 dimensions
# A photo's faces are re-read when it was processed less than this long before the last sync:
# covers transactions still open at that sync and clock skew between worker machines.
SYNC_SLACK = timedelta(seconds=120)
REBUILD_EVERY = timedelta(minutes=30)  # and from scratch now and then, whatever else happened
SYNC_PHOTOS_PER_READ = 500  # photo ids per IN list when a sync reads new photos' faces
# How often a sync counts the event's stored faces against the live rows, to rebuild after a
# deletion. Rows of a deleted photo only add its id to a search's superset until then (its
# faces are gone, so its rematch finds nothing); the count itself is a pass over every photo of
# the event (30 ms at 55k photos), which at every search was a large part of race day's matching.
COUNT_EVERY = timedelta(seconds=30)


@dataclass
class EventFaces:
    """Face vectors of one event and model, in memory, with the photo of each row.

    Rows are stored in blocks of BLOCK_ROWS, so a matrix that grows with the event is never copied
    whole (a 1M-face matrix grown by copying would hold twice its 128 MB for a moment). Per photo
    (its index in `photo_ids`): the rows it was last appended at and the processing time they are
    known as of, in numpy arrays rather than a Python object per photo.
    """

    built_at: datetime
    synced_at: datetime
    dim: int
    counted_at: datetime | None = None  # the last count of the event's stored faces (COUNT_EVERY)
    blocks: list[np.ndarray] = field(default_factory=list)  # (BLOCK_ROWS, dim) int8, unit vectors x SCALE
    row_photo: list[np.ndarray] = field(default_factory=list)  # (BLOCK_ROWS,) int32 photo index; -1: dead row
    photo_ids: list[str] = field(default_factory=list)
    photo_index: dict[str, int] = field(default_factory=dict)
    first_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: not tracked
    end_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    known_as_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # POSIX seconds
    size: int = 0  # rows used, dead ones included
    live: int = 0

    def rows_of(self, photo_id: str) -> tuple[int, int, float] | None:
        """(first row, end row, known as of) of the photo's tracked rows, or None."""
        index = self.photo_index.get(photo_id)
        if index is None or self.first_row[index] < 0:
            return None
        return int(self.first_row[index]), int(self.end_row[index]), float(self.known_as_of[index])

    def append(self, photo_id: str, vectors: np.ndarray, known_as_of: datetime) -> None:
        """The photo's faces (float vectors) as new rows; its earlier tracked rows die."""
        old = self.rows_of(photo_id)
        if old is not None:  # reprocessed: its earlier faces are dead rows now
            self._write(old[0], old[1], photo=-1)
            self.live -= old[1] - old[0]
        if len(vectors):
            self.extend(np.array([photo_id] * len(vectors), object), quantised(vectors), known_as_of)
        else:  # no matchable face left: tracked with no rows
            index = self._index(photo_id)
            self.first_row[index] = self.end_row[index] = self.size
            self.known_as_of[index] = known_as_of.timestamp()

    def extend(self, photos: np.ndarray, vectors: np.ndarray, known_as_of: datetime) -> None:
        """int8 rows, grouped by photo (`photos`: the photo id of each row), tracked from now on.
        A photo's earlier rows stay as they are (see _build)."""
        if not len(photos):
            return
        bounds = np.flatnonzero(np.r_[True, photos[1:] != photos[:-1], True])
        indices = np.array([self._index(photos[b]) for b in bounds[:-1]], np.int64)
        start = self.size
        self._write(start, start + len(vectors), photo=np.repeat(indices, np.diff(bounds)).astype(np.int32),
                    vectors=vectors)
        self.first_row[indices], self.end_row[indices] = start + bounds[:-1], start + bounds[1:]
        self.known_as_of[indices] = known_as_of.timestamp()
        self.size, self.live = start + len(vectors), self.live + len(vectors)

    def _index(self, photo_id: str) -> int:
        index = self.photo_index.setdefault(photo_id, len(self.photo_ids))
        if index == len(self.photo_ids):
            self.photo_ids.append(photo_id)
            if index == len(self.first_row):  # room for more photos: doubling, a few MB at most
                grow = max(1024, len(self.first_row))
                self.first_row = np.r_[self.first_row, np.full(grow, -1, np.int64)]
                self.end_row = np.r_[self.end_row, np.zeros(grow, np.int64)]
                self.known_as_of = np.r_[self.known_as_of, np.zeros(grow, np.float64)]
        return index

    def _write(self, start: int, end: int, *, photo: int | np.ndarray, vectors: np.ndarray | None = None) -> None:
        """Rows [start, end): their photo index, and their vectors when given; blocks as needed."""
        at = start
        while at < end:
            block, offset = divmod(at, BLOCK_ROWS)
            if block == len(self.blocks):
                self.blocks.append(np.zeros((BLOCK_ROWS, self.dim), np.int8))
                self.row_photo.append(np.full(BLOCK_ROWS, -1, np.int32))
            n = min(end - at, BLOCK_ROWS - offset)
            part = slice(at - start, at - start + n)
            self.row_photo[block][offset:offset + n] = photo if np.isscalar(photo) else photo[part]
            if vectors is not None:
                self.blocks[block][offset:offset + n] = vectors[part]
            at += n

    def search(self, vector: np.ndarray, threshold: float, first_row: int = 0) -> set[str]:
        """Photos with a row from `first_row` on whose int8 product reaches `threshold` (less the
        rounding margin)."""
        found: set[str] = set()
        # A few rows of int8 at a time as float32, small enough to stay in the CPU cache, times the
        # query by BLAS: 2.5x faster than numpy's integer product, and exact (every partial sum is
        # an integer below 2**24) unless the vectors are very long.
        exact = self.dim * SCALE * SCALE < 2 ** 24
        query = quantised(vector).astype(np.float32 if exact else np.int32)
        scratch = np.empty((SEARCH_ROWS, self.dim), query.dtype)
        bar = (threshold - INT8_MARGIN) * SCALE * SCALE
        for block in range(first_row // BLOCK_ROWS, len(self.blocks)):
            vectors, photo_of_row = self.blocks[block], self.row_photo[block]
            used = min(BLOCK_ROWS, self.size - block * BLOCK_ROWS)
            for start in range(max(first_row - block * BLOCK_ROWS, 0), used, SEARCH_ROWS):
                rows = scratch[:min(SEARCH_ROWS, used - start)]
                rows[...] = vectors[start:start + len(rows)]
                photos = photo_of_row[start + np.flatnonzero(rows @ query >= bar)]
                found.update(self.photo_ids[i] for i in np.unique(photos[photos >= 0]))
        return found


@dataclass(frozen=True)
class SearchMark:
    """Where a search left an event's matrix: the build it searched and the rows it had. A later
    search `after` it reads only the rows appended since (photos processed or reprocessed
    meanwhile), so a search made before taking the event lock can be completed under it."""

    built_at: datetime
    rows: int


class FaceMatrixCache:
    """Event face matrices of this process (the matching worker), synced before each search:
    only photos processed since the last sync (less SYNC_SLACK) are read, so after the first
    search a new runner costs one matrix-vector product over the event, not a database scan."""

    def __init__(self, max_events: int = 2) -> None:
        self._events: dict[tuple[str, str], EventFaces] = {}
        self._lock = threading.Lock()
        self.max_events = max_events

    def candidates(self, uow: UnitOfWork, event_id: str, model_id: str, vector: np.ndarray,
                   threshold: float) -> list[str]:
        """Photos with a face at least `threshold` similar to `vector` (a superset)."""
        return self.search(uow, event_id, model_id, vector, threshold)[0]

    def search(self, uow: UnitOfWork, event_id: str, model_id: str, vector: np.ndarray, threshold: float, *,
               after: SearchMark | None = None) -> tuple[list[str], SearchMark | None]:
        """`candidates`, and the mark to search only what comes after (None: the event's templates
        are purged). `after`: only the rows appended since that mark, unless the matrix was
        rebuilt since (then all)."""
        with self._lock:  # one search per process at a time; the matrix is not shared state
            if uow.session.scalar(select(Event.biometrics_purged_at).where(Event.id == event_id)) is not None:
                for key in [k for k in self._events if k[0] == event_id]:  # retention over: forget them
                    del self._events[key]
                return [], None
            faces = self._synced(uow, event_id, model_id, len(vector))
            first_row = after.rows if after is not None and after.built_at == faces.built_at else 0
            return sorted(faces.search(vector, threshold, first_row)), SearchMark(faces.built_at, faces.size)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def _synced(self, uow: UnitOfWork, event_id: str, model_id: str, dim: int) -> EventFaces:
        key = (event_id, model_id)
        now = utcnow()
        faces = self._events.get(key)
        if faces is not None and now - faces.built_at < REBUILD_EVERY:
            if _sync(uow, faces, event_id, model_id, dim, now) and not _rows_of_deleted_faces(uow, faces, event_id, now):
                return faces
        if len(self._events) >= self.max_events and key not in self._events:
            self._events.pop(next(iter(self._events)))
        self._events[key] = faces = _build(uow, event_id, model_id, dim, now)
        return faces


def _build(uow: UnitOfWork, event_id: str, model_id: str, dim: int, now: datetime) -> EventFaces:
    faces = EventFaces(now, now, dim, counted_at=now)  # every stored face read: nothing to count yet
    known = now - SYNC_SLACK  # photos processed just before the build are read again at the next sync
    for photo_ids, matrix in event_face_chunks(uow, event_id, model_id, dim):
        order = np.argsort(photo_ids, kind="stable")
        # A photo met again in a later chunk (COPY has no order) is tracked by its new rows only: its
        # earlier rows stay live but untracked, so a reprocess leaves them behind and the count
        # check rebuilds the matrix.
        faces.extend(photo_ids[order], quantised(matrix)[order], known)
    return faces


def quantised(vectors: np.ndarray) -> np.ndarray:
    """Unit float vectors as int8 (x SCALE, rounded)."""
    return np.clip(np.rint(np.asarray(vectors, np.float32) * SCALE), -SCALE, SCALE).astype(np.int8)


def _rows_of_deleted_faces(uow: UnitOfWork, faces: EventFaces, event_id: str, now: datetime) -> bool:
    """True when the matrix holds more live rows than the event has faces (photos or faces were
    deleted: rebuild); counted at most every COUNT_EVERY."""
    if faces.counted_at is not None and now - faces.counted_at < COUNT_EVERY:
        return False
    faces.counted_at = now
    return faces.live > _stored_faces(uow, event_id)


def _stored_faces(uow: UnitOfWork, event_id: str) -> int:
    return int(uow.session.scalar(select(func.coalesce(func.sum(Photo.face_count), 0))
                                  .where(Photo.event_id == event_id)) or 0)


def _sync(uow: UnitOfWork, faces: EventFaces, event_id: str, model_id: str, dim: int, now: datetime) -> bool:
    """Read what changed since the last sync; False when the matrix must be rebuilt instead."""
    since = faces.synced_at - SYNC_SLACK
    # Photos first, faces only of those not held as processed: the slack re-reads every photo of
    # the last two minutes, which on race day is thousands of faces a sync (a sync per new runner
    # and per moved bib link); their embeddings were most of PostgreSQL's work per search.
    processed = {photo_id: processed_at for photo_id, processed_at in uow.session.execute(
        select(Photo.id, Photo.processed_at).where(Photo.event_id == event_id, Photo.status == PhotoStatus.done.value,
                                                   Photo.processed_at >= since))}
    stale = sorted(photo_id for photo_id, processed_at in processed.items()
                   if (known := faces.rows_of(photo_id)) is None or processed_at.timestamp() > known[2])
    by_photo: dict[str, list[bytes]] = {photo_id: [] for photo_id in stale}
    for start in range(0, len(stale), SYNC_PHOTOS_PER_READ):
        for photo_id, embedding in uow.session.execute(
                select(Face.photo_id, Face.embedding)
                .where(Face.photo_id.in_(stale[start:start + SYNC_PHOTOS_PER_READ]), Face.model_id == model_id,
                       privacy.matchable_faces()).order_by(Face.photo_id, Face.id)):
            by_photo[photo_id].append(embedding)
    for photo_id, blobs in by_photo.items():  # a photo with no face of this model is tracked with no rows
        vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim)
        faces.append(photo_id, vectors, processed[photo_id])
    # faces excluded since (an erasure, app/services/privacy.py): their photos' rows are replaced by
    # the faces still matchable (ix_faces_excluded keeps this to a few rows)
    excluded = set(uow.session.scalars(
        select(Face.photo_id).where(Face.event_id == event_id, Face.model_id == model_id,
                                    Face.excluded_at.is_not(None), Face.excluded_at >= since)
    )) - set(by_photo)
    for photo_id in sorted(excluded):
        known = faces.rows_of(photo_id)
        if known is None:
            if photo_id in faces.photo_index:
                return False  # rows the build could not track (a photo over two COPY chunks)
            continue  # not held
        blobs = list(uow.session.scalars(
            select(Face.embedding).where(Face.photo_id == photo_id, Face.model_id == model_id,
                                         privacy.matchable_faces()).order_by(Face.id)))
        vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim)
        faces.append(photo_id, vectors, datetime.fromtimestamp(known[2], timezone.utc))
    faces.synced_at = now
    return True


face_matrices = FaceMatrixCache()
