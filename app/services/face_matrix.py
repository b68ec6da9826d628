"""An event's face embeddings as numpy chunks, for a new runner's search (matching.match_runner).

A million faces as ORM objects or even as row tuples cost seconds and gigabytes (issue 11:
7.3 s and 1.9 GB). On PostgreSQL the rows are streamed with COPY ... (FORMAT binary) and parsed
by numpy as fixed-size records, so no Python object is made per face and memory stays at one
chunk; elsewhere (SQLite, the embedded default) plain rows are fetched chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sqlalchemy import select

from app.db import Face
from app.db.session import UnitOfWork

CHUNK_FACES = 50_000  # 25 MB of 128-d float32 vectors per chunk
_COPY_HEADER = 19  # PGCOPY signature (11), flags (4), header extension length (4)


def event_face_chunks(uow: UnitOfWork, event_id: str, model_id: str,
                      dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(photo ids, (n, dim) float32 matrix) chunks covering every face of the event and model."""
    if uow.session.get_bind().dialect.name == "postgresql":
        yield from _copy_chunks(uow, event_id, model_id, dim)
        return
    result = uow.session.execute(
        select(Face.photo_id, Face.embedding).where(Face.event_id == event_id, Face.model_id == model_id)
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
    sql = ("COPY (SELECT photo_id, embedding FROM faces WHERE event_id = %s AND model_id = %s) "
           "TO STDOUT (FORMAT binary)")
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
