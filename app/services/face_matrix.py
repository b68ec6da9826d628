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
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select

from app.db import Event, Face, Photo, PhotoStatus, utcnow
from app.db.session import UnitOfWork
from app.services import privacy

CHUNK_FACES = 20_000  # 10 MB of 128-d float32 vectors per chunk: the transient memory of a search
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
    rows = np.frombuffer(bytes(buffer[_COPY_HEADER:_COPY_HEADER + count * record.itemsize]), record)
    if final and body != count * record.itemsize or not (
            np.all(rows["fields"] == 2) and np.all(rows["id_len"] == id_len) and np.all(rows["vec_len"] == 4 * dim)):
        raise ValueError("faces of unexpected shape in the COPY stream (photo id length or embedding size)")
    del buffer[_COPY_HEADER:_COPY_HEADER + count * record.itemsize]
    return rows["id"].astype(str).astype(object), np.ascontiguousarray(rows["vec"])


# --- the per-process face matrix of an event (a new runner's search) ---------------------------

# Vectors are kept as int8 (x127): 128 MB per 1M faces, and an int8 x int32 product is ~3x faster
# than converting fp16. The rounding moves a cosine by 0.0023 (std; max 0.0104 in 100k faces),
# and by more than 0.04 with probability under 1e-11 (Hoeffding over the 256 rounding terms), so
# the bar is lowered by that; rematch_photos then decides from the stored float32 vectors.
SCALE = 127
INT8_MARGIN = 0.04
# A photo's faces are re-read when it was processed less than this long before the last sync:
# covers transactions still open at that sync and clock skew between worker machines.
SYNC_SLACK = timedelta(seconds=120)
REBUILD_EVERY = timedelta(minutes=30)  # and from scratch now and then, whatever else happened


@dataclass
class EventFaces:
    """Face vectors of one event and model, in memory, with the photo of each row."""

    built_at: datetime
    synced_at: datetime
    vectors: np.ndarray  # (capacity, dim) int8, unit vectors x SCALE; rows [0, size) are used
    row_photo: np.ndarray  # (capacity,) int32 index into photo_ids; -1 for a replaced row
    photo_ids: list[str] = field(default_factory=list)
    photo_index: dict[str, int] = field(default_factory=dict)
    photo_rows: dict[str, tuple[int, int, datetime]] = field(default_factory=dict)  # start, end, known as of
    size: int = 0
    live: int = 0

    def append(self, photo_id: str, vectors: np.ndarray, known_as_of: datetime) -> None:
        old = self.photo_rows.get(photo_id)
        if old is not None:  # reprocessed: its earlier faces are dead rows now
            self.row_photo[old[0]:old[1]] = -1
            self.live -= old[1] - old[0]
            index = self.photo_index[photo_id]
        else:
            index = self.photo_index.setdefault(photo_id, len(self.photo_ids))
            if index == len(self.photo_ids):
                self.photo_ids.append(photo_id)
        if self.size + len(vectors) > len(self.vectors):
            capacity = max(len(self.vectors) + len(self.vectors) // 4, self.size + len(vectors), 1024)
            grown = np.zeros((capacity, self.vectors.shape[1]), np.int8)
            grown[:self.size] = self.vectors[:self.size]
            rows = np.full(capacity, -1, np.int32)
            rows[:self.size] = self.row_photo[:self.size]
            self.vectors, self.row_photo = grown, rows
        start, end = self.size, self.size + len(vectors)
        self.vectors[start:end] = quantised(vectors)
        self.row_photo[start:end] = index
        self.photo_rows[photo_id] = (start, end, known_as_of)
        self.size, self.live = end, self.live + len(vectors)

    def search(self, vector: np.ndarray, threshold: float) -> set[str]:
        found: set[str] = set()
        query = quantised(vector).astype(np.int32)
        bar = (threshold - INT8_MARGIN) * SCALE * SCALE
        for start in range(0, self.size, CHUNK_FACES):
            block = self.vectors[start:min(start + CHUNK_FACES, self.size)]
            hits = np.flatnonzero(block @ query >= bar) + start
            photos = self.row_photo[hits]
            found.update(self.photo_ids[i] for i in np.unique(photos[photos >= 0]))
        return found


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
        with self._lock:  # one search per process at a time; the matrix is not shared state
            if uow.session.scalar(select(Event.biometrics_purged_at).where(Event.id == event_id)) is not None:
                for key in [k for k in self._events if k[0] == event_id]:  # retention over: forget them
                    del self._events[key]
                return []
            faces = self._synced(uow, event_id, model_id, len(vector))
            return sorted(faces.search(vector, threshold))

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def _synced(self, uow: UnitOfWork, event_id: str, model_id: str, dim: int) -> EventFaces:
        key = (event_id, model_id)
        now = utcnow()
        faces = self._events.get(key)
        if faces is not None and now - faces.built_at < REBUILD_EVERY:
            # more rows than stored faces: photos or faces were deleted
            if _sync(uow, faces, event_id, model_id, dim, now) and faces.live <= _stored_faces(uow, event_id):
                return faces
        if len(self._events) >= self.max_events and key not in self._events:
            self._events.pop(next(iter(self._events)))
        self._events[key] = faces = _build(uow, event_id, model_id, dim, now)
        return faces


def _build(uow: UnitOfWork, event_id: str, model_id: str, dim: int, now: datetime) -> EventFaces:
    # sized once from the stored counts (plus room to grow): no copy while the matrix fills
    expected = _stored_faces(uow, event_id)
    capacity = expected + expected // 8 + 1024
    faces = EventFaces(now, now, np.zeros((capacity, dim), np.int8), np.full(capacity, -1, np.int32))
    known = now - SYNC_SLACK  # photos processed just before the build are read again at the next sync
    for photo_ids, matrix in event_face_chunks(uow, event_id, model_id, dim):
        if not len(photo_ids):
            continue
        order = np.argsort(photo_ids, kind="stable")
        ids, matrix = photo_ids[order], matrix[order]
        bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
        for start, end in zip(bounds[:-1], bounds[1:]):
            photo = ids[start]
            # A photo met again in a later chunk (COPY has no order): its earlier rows stay live but
            # untracked, so a reprocess leaves them behind and the count check rebuilds the matrix.
            faces.photo_rows.pop(photo, None)
            faces.append(photo, matrix[start:end], known)
    return faces


def quantised(vectors: np.ndarray) -> np.ndarray:
    """Unit float vectors as int8 (x SCALE, rounded)."""
    return np.clip(np.rint(np.asarray(vectors, np.float32) * SCALE), -SCALE, SCALE).astype(np.int8)


def _stored_faces(uow: UnitOfWork, event_id: str) -> int:
    return int(uow.session.scalar(select(func.coalesce(func.sum(Photo.face_count), 0))
                                  .where(Photo.event_id == event_id)) or 0)


def _sync(uow: UnitOfWork, faces: EventFaces, event_id: str, model_id: str, dim: int, now: datetime) -> bool:
    """Read what changed since the last sync; False when the matrix must be rebuilt instead."""
    since = faces.synced_at - SYNC_SLACK
    rows = uow.session.execute(
        select(Photo.id, Photo.processed_at, Face.embedding).join(Face, Face.photo_id == Photo.id)
        .where(Photo.event_id == event_id, Photo.status == PhotoStatus.done.value,
               Photo.processed_at >= since, Face.model_id == model_id, privacy.matchable_faces())
        .order_by(Photo.id, Face.id)
    ).all()
    by_photo: dict[str, list[bytes]] = {}
    processed: dict[str, datetime] = {}
    for photo_id, processed_at, embedding in rows:
        by_photo.setdefault(photo_id, []).append(embedding)
        processed[photo_id] = processed_at
    for photo_id, blobs in by_photo.items():
        known = faces.photo_rows.get(photo_id)
        if known is not None and processed[photo_id] <= known[2]:
            continue  # the same version of the photo as we hold
        vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim)
        faces.append(photo_id, vectors, processed[photo_id])
    # faces excluded since (an erasure, app/services/privacy.py): their photos' rows are replaced by
    # the faces still matchable (ix_faces_excluded keeps this to a few rows)
    excluded = set(uow.session.scalars(
        select(Face.photo_id).where(Face.event_id == event_id, Face.model_id == model_id,
                                    Face.excluded_at.is_not(None), Face.excluded_at >= since)
    )) - set(by_photo)
    for photo_id in sorted(excluded):
        known = faces.photo_rows.get(photo_id)
        if known is None:
            if photo_id in faces.photo_index:
                return False  # rows the build could not track (a photo over two COPY chunks)
            continue  # not held
        blobs = list(uow.session.scalars(
            select(Face.embedding).where(Face.photo_id == photo_id, Face.model_id == model_id,
                                         privacy.matchable_faces()).order_by(Face.id)))
        vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(-1, dim)
        faces.append(photo_id, vectors, known[2])
    faces.synced_at = now
    return True


face_matrices = FaceMatrixCache()
