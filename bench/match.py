"""Time matching at scale and print memory use (a benchmark, not a test).

    .venv/bin/python bench/match.py [--dim 128] [--db-faces 100000]

1. One selfie against 100k and 1M stored faces: unpack the stored bytes into a matrix (what
   match_runner does with the rows it reads), one matrix-vector product, the candidate photos.
2. A new photo's faces against 50k runners: the full assignment (app.services.matching.assign).
3. With --db-faces N: match_runner end to end on SQLite with N faces (reading rows included).
Random unit vectors stand in for embeddings; the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.services.matching import CANDIDATE_MARGIN, as_matrix, assign  # noqa: E402

THRESHOLD = 0.48
FACES_PER_PHOTO = 10


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in chunks: float64 temporaries of 1M x 128 are 1 GB
        block = rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def selfie_against_faces(rng, n_faces: int, dim: int) -> None:
    faces = unit(rng, n_faces, dim)
    blobs = [row.tobytes() for row in faces]  # as the rows come from the database
    photos = np.repeat(np.arange(n_faces // FACES_PER_PHOTO + 1), FACES_PER_PHOTO)[:n_faces]
    selfie = unit(rng, 1, dim)[0]

    def search() -> np.ndarray:
        return np.unique(photos[faces @ selfie >= THRESHOLD - CANDIDATE_MARGIN])

    unpack = best_of(lambda: as_matrix(blobs, dim), repeat=3)
    compute = best_of(search)
    print(f"| selfie vs {n_faces:>9,} faces | unpack {unpack * 1000:8.1f} ms | similarity + candidates "
          f"{compute * 1000:7.1f} ms | matrix {faces.nbytes / 2**20:7.1f} MiB | peak RSS {peak_mb():7.0f} MiB |")


def photo_against_runners(rng, n_runners: int, dim: int, faces_in_photo: int = 20) -> None:
    runners = unit(rng, n_runners, dim)
    faces = unit(rng, faces_in_photo, dim)
    faces[:5] = runners[:5]  # five runners really are in it
    photo = np.zeros(faces_in_photo, np.int64)
    result = assign(faces @ runners.T, photo, THRESHOLD)
    assert len(result.face) >= 5
    took = best_of(lambda: assign(faces @ runners.T, photo, THRESHOLD))
    print(f"| photo of {faces_in_photo} faces vs {n_runners:,} runners | assign {took * 1000:7.2f} ms | "
          f"runner matrix {runners.nbytes / 2**20:6.1f} MiB | peak RSS {peak_mb():7.0f} MiB |")


def match_runner_on_sqlite(rng, n_faces: int, dim: int) -> None:
    from sqlalchemy import insert

    from app.db import Event, Face, Organisation, Photo, Runner
    from app.db.migrate import upgrade_to_head
    from app.db.session import make_engine, make_sessionmaker, unit_of_work
    from app.services import matching

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade_to_head(url)
        engine = make_engine(url)
        make_session = make_sessionmaker(engine)
        faces = unit(rng, n_faces, dim)
        with unit_of_work(make_session) as uow:
            organisation = Organisation(name="bench", slug="bench")
            uow.session.add(organisation)
            uow.session.flush()
            event = Event(organisation_id=organisation.id, name="bench", slug="bench", match_threshold=THRESHOLD)
            uow.session.add(event)
            uow.session.flush()
            n_photos = n_faces // FACES_PER_PHOTO
            photo_ids = [f"p{i:08d}" for i in range(n_photos)]
            uow.session.execute(insert(Photo), [
                {"id": pid, "event_id": event.id, "filename": f"{pid}.jpg", "sha256": pid, "size_bytes": 1,
                 "content_type": "image/jpeg", "storage_key": pid, "status": "done"} for pid in photo_ids])
            uow.session.execute(insert(Face), [
                {"id": f"f{i:09d}", "photo_id": photo_ids[i // FACES_PER_PHOTO], "event_id": event.id,
                 "x1": 0, "y1": 0, "x2": 1, "y2": 1, "score": 1, "size_px": 1, "landmarks": [],
                 "embedding": faces[i].tobytes(), "model_id": "bench"} for i in range(n_photos * FACES_PER_PHOTO)])
            selfie = faces[123] + 0.05 * unit(rng, 1, dim)[0]
            selfie /= np.linalg.norm(selfie)
            runner = Runner(event_id=event.id, name="r", email="r@example.com", model_id="bench",
                            embedding=selfie.astype(np.float32).tobytes())
            uow.session.add(runner)
        started = time.perf_counter()
        with unit_of_work(make_session) as uow:
            found = matching.match_runner(uow, runner.id)
        took = time.perf_counter() - started
        engine.dispose()
    print(f"| match_runner on SQLite, {n_faces:,} faces | {took * 1000:8.1f} ms (rows read included) | "
          f"{found} match | peak RSS {peak_mb():7.0f} MiB |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=128, help="embedding size (SFace 128, facenet 512)")
    parser.add_argument("--db-faces", type=int, default=100_000, help="0 skips the SQLite run")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, dim {args.dim}, threshold {THRESHOLD}\n")
    photo_against_runners(rng, 50_000, args.dim)
    if args.db_faces:
        match_runner_on_sqlite(rng, args.db_faces, args.dim)
    for n in (100_000, 1_000_000):
        selfie_against_faces(rng, n, args.dim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
