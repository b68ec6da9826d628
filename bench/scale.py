"""Matching at event scale on PostgreSQL (a benchmark, not a test): prints numbers for people.

    .venv/bin/python bench/scale.py [--small] [--quick] [--url postgresql+psycopg://postgres@127.0.0.1/postgres]
        [--keep] [--reuse DATABASE] [--profile DIR] [--start-list N]

Creates a scratch database, fills one synthetic event with runners and processed photos (20k
runners and 1M faces; --small: 2k and 100k) through COPY, then measures with the project's own
services (app/services/matching.py):
1. per-photo matching (`on_photo_done`): cold (runner matrix loaded) and warm (cached), ms;
2. a new runner (`match_runner`): ms and the peak memory of the process that ran it;
3. a threshold change: the PATCH's own transaction and the background rematch (all chunks);
4. the matching step's photos/s with 1 and 2 worker processes on the same event.
Wall and CPU time are both printed: the machine is shared, so judge the per-core cost by CPU.
Embeddings are random unit vectors; each runner appears (cosine about 0.6) in some photos.
`--start-list N` adds N runners without a selfie and reads their bibs on 6 faces of every photo
(race day after a start-list import): each photo then takes the bib path of `on_photo_done`.
The scratch database is dropped at the end (`--keep` keeps it and prints its name; `--reuse NAME`
measures on a kept one instead of filling a new one: filling 1M faces takes minutes). `--profile
DIR` writes cProfile statistics (CPU time) of the warm per-photo loop and of each new runner to
DIR and prints their top entries by cumulative time (the timings printed then include the
profiler's overhead). Last line:
`matching: X photos/s with 1 worker, Y with 2 (ratio R) at N runners, M faces`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import multiprocessing as mp
import os
import resource
import secrets
import sys
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker process, as in production
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from app.db import Event, Organisation, Photo, Runner  # noqa: E402
from app.db.base import new_id, utcnow  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402
from app.db.session import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from app.services import matching  # noqa: E402

DIM = 128
FACES_PER_PHOTO = 18
THRESHOLD = 0.48
MODEL_ID = "yunet-2023mar+sface-2021dec"
SHARE_OF_RUNNER_FACES = 0.3  # faces that belong to an enrolled runner; the rest are bystanders
TIMED_PHOTOS = 200  # photos held back (faces kept aside, stored when timed) for the per-photo timings
HELD_PREFIX = "held-"  # their file names start with it (found again by --reuse)
BIBS_PER_PHOTO = 6  # --start-list: start-list bibs read on the faces of each photo


class Recorder:
    """A task sender that only records (REMATCH_EVENT is run here by hand)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple]] = []

    def send(self, task_name: str, *args: object) -> None:
        self.sent.append((task_name, args))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def copy_rows(raw, table: str, columns: list[str], rows) -> None:  # type: ignore[no-untyped-def]
    """COPY text-format rows (already escaped) into `table`."""
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buf = io.StringIO()
        for n, row in enumerate(rows, 1):
            buf.write("\t".join(row))
            buf.write("\n")
            if n % 20_000 == 0:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())


def bytea(vector: np.ndarray) -> str:
    return "\\\\x" + vector.astype(np.float32).tobytes().hex()


def fill(url: str, n_runners: int, n_faces: int, seed: int = 7,
         start_list: int = 0) -> tuple[str, list[str], np.ndarray]:
    """The event, its runners and photos; returns (event id, held-back photo ids, identities).

    `start_list`: that many more runners without a selfie, bibs 1..N, and on every photo the bibs
    of BIBS_PER_PHOTO of them read on its faces (the held-back photos too), as on race day after
    a start-list import: each photo then goes through the bib path of `on_photo_done`."""
    rng = np.random.default_rng(seed)
    engine = make_engine(url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        organisation = Organisation(name="Scale test", slug=f"scale-{secrets.token_hex(4)}")
        uow.session.add(organisation)
        uow.session.flush()
        event = Event(name="Scale test", slug=f"scale-{secrets.token_hex(4)}", match_threshold=THRESHOLD,
                      organisation_id=organisation.id)
        uow.session.add(event)
        uow.session.flush()
        event_id = event.id
    identities = unit(rng, n_runners)
    now = utcnow().isoformat()
    earlier = (utcnow() - timedelta(hours=1)).isoformat()  # processed an hour ago, as after a race
    raw = engine.raw_connection()
    try:
        copy_rows(raw.driver_connection, "runners",
                  ["id", "event_id", "name", "email", "consent_at", "embedding", "model_id", "matched_at", "created_at"],
                  ([new_id(), event_id, f"Runner {i}", f"r{i}@example.org", now, bytea(identities[i]), MODEL_ID, now, now]
                   for i in range(n_runners)))
        n_photos = n_faces // FACES_PER_PHOTO
        photo_ids = [new_id() for _ in range(n_photos)]
        held = set(photo_ids[-TIMED_PHOTOS:])
        copy_rows(raw.driver_connection, "photos",
                  ["id", "event_id", "filename", "sha256", "size_bytes", "content_type", "storage_key", "status",
                   "queued_at", "attempts", "processed_at", "created_at", "face_count", "width", "height"],
                  ([pid, event_id, f"{HELD_PREFIX if pid in held else ''}{pid}.jpg", secrets.token_hex(32), "5000000", "image/jpeg", f"events/{event_id}/{pid}",
                    "processing" if pid in held else "done", earlier, "1", earlier, earlier, str(FACES_PER_PHOTO),
                    "6000", "4000"]
                   for pid in photo_ids))

        read_on: list[tuple[str, str]] = []  # --start-list: (photo id, face id) of the faces with a bib read

        def faces():  # type: ignore[no-untyped-def]
            landmarks = "[[10,10],[20,10],[15,15],[11,20],[19,20]]"
            for start in range(0, n_photos, 1000):
                block = photo_ids[start:start + 1000]
                vectors = unit(rng, len(block) * FACES_PER_PHOTO)
                owners = rng.integers(0, n_runners, len(vectors))
                mine = rng.random(len(vectors)) < SHARE_OF_RUNNER_FACES
                vectors[mine] = vectors[mine] * 0.8 + identities[owners[mine]] * 0.6  # cosine ~0.6 to the runner
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                sizes = rng.integers(40, 400, len(vectors))  # a start-list runner's link is their largest face
                for k, vector in enumerate(vectors):
                    face_id, photo_id = new_id(), block[k // FACES_PER_PHOTO]
                    if start_list and k % FACES_PER_PHOTO < BIBS_PER_PHOTO:
                        read_on.append((photo_id, face_id))
                    yield [face_id, photo_id, event_id, "0", "0", "100", "100", "0.9", str(sizes[k]),
                           landmarks, bytea(vector), MODEL_ID]

        copy_rows(raw.driver_connection, "faces",
                  ["id", "photo_id", "event_id", "x1", "y1", "x2", "y2", "score", "size_px", "landmarks", "embedding",
                   "model_id"], faces())
        if start_list:
            copy_rows(raw.driver_connection, "runners",
                      ["id", "event_id", "name", "email", "bib", "from_start_list", "consent_at", "created_at"],
                      ([new_id(), event_id, f"Listed {i}", f"l{i}@example.org", str(i), "t", now, now]
                       for i in range(1, start_list + 1)))
            bibs = rng.integers(1, start_list + 1, len(read_on))
            copy_rows(raw.driver_connection, "bib_reads",
                      ["id", "photo_id", "event_id", "face_id", "number", "x1", "y1", "x2", "y2", "score", "text_px",
                       "model_id"],
                      ([new_id(), photo_id, event_id, face_id, str(bib), "0", "0", "10", "10", "0.9", "20", "ppocr"]
                       for (photo_id, face_id), bib in zip(read_on, bibs)))
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        # the held-back photos' faces and bib reads wait in tables of their own: each timed photo
        # stores them in its own transaction, as processing does, so none is committed before
        for table in ("faces", "bib_reads"):
            conn.execute(text(f"CREATE TABLE held_{table} AS SELECT * FROM {table} WHERE photo_id = ANY(:ids)"),
                         {"ids": sorted(held)})
        conn.execute(text("DELETE FROM faces WHERE photo_id = ANY(:ids)"), {"ids": sorted(held)})  # reads cascade
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return event_id, sorted(held), identities


def store_held_faces(uow, photo_id: str) -> Photo:  # type: ignore[no-untyped-def]
    """A held-back photo's faces and bib reads stored in this transaction, and the photo marked
    done now, as the worker does before matching it (the face matrices' syncs read it); the
    photo, to match."""
    for table in ("faces", "bib_reads"):
        uow.session.execute(text(f"INSERT INTO {table} SELECT * FROM held_{table} WHERE photo_id = :p"),
                            {"p": photo_id})
    photo = uow.session.get(Photo, photo_id)
    photo.status, photo.processed_at = "done", utcnow()
    return photo


def reuse(url: str, n_runners: int, seed: int = 7) -> tuple[str, list[str], np.ndarray]:
    """A database filled by an earlier run (--keep): what `fill` returned, less the new runners
    that run enrolled."""
    engine = create_engine(url)
    with engine.begin() as conn:
        event_id = conn.execute(text("SELECT id FROM events WHERE name = 'Scale test'")).scalar_one()
        conn.execute(text("DELETE FROM runners WHERE event_id = :e AND name = 'New'"), {"e": event_id})
        conn.execute(text("UPDATE events SET runners_version = runners_version + 1 WHERE id = :e"), {"e": event_id})
        held = list(conn.execute(text("SELECT id FROM photos WHERE event_id = :e AND filename LIKE :p ORDER BY id"),
                                 {"e": event_id, "p": HELD_PREFIX + "%"}).scalars())
        stored = conn.execute(text("SELECT count(*) FROM runners WHERE event_id = :e AND embedding IS NOT NULL"),
                              {"e": event_id}).scalar_one()  # a start list's runners have none
    engine.dispose()
    if stored != n_runners:
        raise SystemExit(f"the kept database has {stored} runners, not {n_runners}: pass the same --small/--runners")
    return event_id, held, unit(np.random.default_rng(seed), n_runners)  # fill's first draw


class Profile:
    """cProfile around some calls, saved to DIR/NAME.prof and summed up on stdout (--profile)."""

    def __init__(self, folder: str | None, name: str) -> None:
        self.path = Path(folder) / f"{name}.prof" if folder else None
        self.profiler = cProfile.Profile(time.process_time) if folder else None  # CPU: the machine is shared

    def __enter__(self) -> Profile:
        if self.profiler is not None:
            self.profiler.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profiler is not None:
            self.profiler.disable()

    def report(self, top: int = 25) -> None:
        if self.profiler is None or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.profiler.dump_stats(self.path)
        out = io.StringIO()
        pstats.Stats(self.profiler, stream=out).sort_stats("cumulative").print_stats(top)
        print(f"--- profile {self.path} (cumulative) ---\n{out.getvalue()}", flush=True)


def initial_matches(url: str, event_id: str) -> float:
    """Every done photo matched once (what the workers would have written); returns seconds."""
    engine = make_engine(url)
    started = time.perf_counter()
    with unit_of_work(make_sessionmaker(engine), Recorder()) as uow:
        matching.rematch_event(uow, matching.lock_event(uow, event_id))
    engine.dispose()
    return time.perf_counter() - started


def match_photos(url: str, event_id: str, photo_ids: list[str], start, results) -> None:  # type: ignore[no-untyped-def]
    """One worker process: `on_photo_done` per photo, one transaction each, as processing does."""
    engine = make_engine(url)
    make_session = make_sessionmaker(engine)
    matching.runner_cache.clear()  # forked from a process whose cache saw the held faces come and go
    with unit_of_work(make_session) as uow:  # warm the runner cache and the face matrix off the clock
        matching.runner_cache.get(uow, event_id, MODEL_ID, matching.read_event_state(uow, event_id).runners_version)
        # a worker builds the event's face matrix once (the first moved bib link or new runner:
        # "new runner, first" above), then only syncs it
        matching.candidate_photos(uow, event_id, MODEL_ID, np.zeros(DIM, np.float32), 2.0)
        backend = uow.session.scalar(text("SELECT pg_backend_pid()"))  # one unit of work at a time: one connection
    lock_wait = [0.0]
    share_event = matching.share_event

    def timed_share_event(uow, event_id):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return share_event(uow, event_id)
        finally:
            lock_wait[0] += time.perf_counter() - t

    matching.share_event = timed_share_event  # how long the shared lock kept this worker waiting
    start.wait()
    c0, w0, b0 = time.process_time(), time.perf_counter(), process_cpu_s(backend)
    for photo_id in photo_ids:
        with unit_of_work(make_session) as uow:
            matching.on_photo_done(uow, store_held_faces(uow, photo_id), first_faces=True)
    results.put((len(photo_ids), time.perf_counter() - w0, time.process_time() - c0, lock_wait[0],
                 process_cpu_s(backend) - b0))
    engine.dispose()


def reset_photos(url: str, photo_ids: list[str]) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM matches WHERE photo_id = ANY(:ids)"), {"ids": photo_ids})
        conn.execute(text("DELETE FROM faces WHERE photo_id = ANY(:ids)"), {"ids": photo_ids})  # reads cascade
        conn.execute(text("UPDATE photos SET status = 'processing' WHERE id = ANY(:ids)"), {"ids": photo_ids})
    engine.dispose()


def process_cpu_s(pid: int) -> float:
    """CPU seconds a process of this machine has used (a PostgreSQL backend: the server is local)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used, every core (from /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def throughput(url: str, event_id: str, photo_ids: list[str], workers: int) -> tuple[float, ...]:
    """Matching photos/s (wall); per photo: the workers' CPU ms, lock-wait ms, their PostgreSQL
    backends' CPU ms and the whole machine's CPU ms, with `workers` processes on one event."""
    reset_photos(url, photo_ids)
    ctx = mp.get_context("fork")
    start, results = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=match_photos, args=(url, event_id, photo_ids[i::workers], start, results))
             for i in range(workers)]
    for p in procs:
        p.start()
    start.wait()
    t0, busy0 = time.perf_counter(), machine_busy_s()
    rows = [results.get() for _ in procs]
    wall, busy = time.perf_counter() - t0, machine_busy_s() - busy0
    for p in procs:
        p.join()
    n = sum(r[0] for r in rows)
    return (n / wall, 1000 * sum(r[2] for r in rows) / n, 1000 * sum(r[3] for r in rows) / n,
            1000 * sum(r[4] for r in rows) / n, 1000 * busy / n)


def per_photo(url: str, event_id: str, photo_ids: list[str], profile_dir: str | None = None) -> None:
    reset_photos(url, photo_ids)
    engine = make_engine(url)
    make_session = make_sessionmaker(engine)
    matching.runner_cache.clear()
    times = []
    profile = Profile(profile_dir, "per_photo_warm")
    for n, photo_id in enumerate(photo_ids[:50]):
        with profile if n else Profile(None, ""):  # the warm photos only
            c0, w0 = time.process_time(), time.perf_counter()
            with unit_of_work(make_session) as uow:
                matching.on_photo_done(uow, store_held_faces(uow, photo_id), first_faces=True)
            times.append((time.perf_counter() - w0, time.process_time() - c0))
    engine.dispose()
    profile.report()
    cold, warm = times[0], np.median(np.array(times[1:]), axis=0)
    print(f"per-photo matching ({FACES_PER_PHOTO} faces): cold {1000 * cold[0]:.0f} ms (runner matrix loaded), "
          f"warm median {1000 * warm[0]:.1f} ms wall, {1000 * warm[1]:.1f} ms CPU "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)


def new_runner_child(url: str, event_id: str, vectors: list[np.ndarray], results,  # type: ignore[no-untyped-def]
                     profile_dir: str | None = None) -> None:
    """Two new runners in one matching worker: the first builds the event's face matrix (cold),
    the second finds it in memory (warm, only photos processed since are read)."""
    engine = make_engine(url)
    make_session = make_sessionmaker(engine)
    # a fresh matching worker: forked from the process that ran the per-photo phase, whose bib
    # photos (--start-list) built the face matrix
    matching.face_matrices.clear()
    for n, vector in enumerate(vectors):
        profile = Profile(profile_dir, f"new_runner_{n + 1}")
        results.put(_one_new_runner(make_session, event_id, vector, profile))
        profile.report()
    engine.dispose()


def _one_new_runner(make_session, event_id: str, vector: np.ndarray,  # type: ignore[no-untyped-def]
                    profile: Profile) -> tuple:
    with unit_of_work(make_session) as uow:
        matching.runners_changed(uow, event_id)
        runner = Runner(event_id=event_id, name="New", email="new@example.org", consent_at=utcnow(),
                        embedding=vector.astype(np.float32).tobytes(), model_id=MODEL_ID)
        uow.session.add(runner)
        uow.session.flush()
        runner_id = runner.id
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0, w0 = time.process_time(), time.perf_counter()
    with profile, unit_of_work(make_session) as uow:
        found = matching.match_runner(uow, runner_id)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with unit_of_work(make_session) as uow:  # how many photos the search handed to the rematch
        candidates = len(matching.candidate_photos(uow, event_id, MODEL_ID, vector, THRESHOLD - matching.CANDIDATE_MARGIN))
    return found, candidates, wall, cpu, before, peak


def new_runner(url: str, event_id: str, identities: np.ndarray, profile_dir: str | None = None) -> None:
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    noise = unit(np.random.default_rng(1), 2)
    vectors = [identities[i] * 0.9 + noise[i] * 0.43 for i in (0, 1)]  # twins of runners 0 and 1
    p = ctx.Process(target=new_runner_child, args=(url, event_id, [v / np.linalg.norm(v) for v in vectors], results,
                                                          profile_dir))
    p.start()
    for label in ("first (builds the face matrix)", "second (matrix in memory)"):
        found, candidates, wall, cpu, before, peak = results.get()
        print(f"new runner, {label}: {1000 * wall:.0f} ms wall, {1000 * cpu:.0f} ms CPU, {candidates} candidate "
              f"photos rematched, {found} matches (the twin's runner keeps the faces); "
              f"process peak RSS {peak:.0f} MiB ({peak - before:+.0f} MiB during the call)", flush=True)
    p.join()


def threshold_change(url: str, event_id: str) -> None:
    from worker.tasks import run_rematch

    engine = make_engine(url)
    make_session = make_sessionmaker(engine)
    w0 = time.perf_counter()
    with unit_of_work(make_session, Recorder()) as uow:
        matching.update_event(uow, event_id, match_threshold=THRESHOLD + 0.02)
    request = time.perf_counter() - w0
    c0, w0 = time.process_time(), time.perf_counter()
    chunks = run_rematch(make_session, event_id)
    print(f"threshold change: request transaction {1000 * request:.0f} ms; background rematch "
          f"{time.perf_counter() - w0:.1f} s wall, {time.process_time() - c0:.1f} s CPU in {chunks} chunks", flush=True)
    with unit_of_work(make_session, Recorder()) as uow:  # back, for the throughput runs
        matching.update_event(uow, event_id, match_threshold=THRESHOLD)
    run_rematch(make_session, event_id)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="2k runners and 100k faces (a few minutes)")
    parser.add_argument("--url", default=os.environ.get("FINISHLINE_TEST_POSTGRES",
                                                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--runners", type=int, default=None)
    parser.add_argument("--faces", type=int, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="skip the two whole-event passes (initial matching, threshold rematch): each is "
                             "photos x faces x runners of CPU, long on a shared 2-core machine at full size")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its name is printed)")
    parser.add_argument("--reuse", metavar="DATABASE", help="measure on a database kept by --keep instead of filling")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the warm per-photo loop and the new runners")
    parser.add_argument("--start-list", type=int, default=0, metavar="N",
                        help=f"N more runners without a selfie (a start list), {BIBS_PER_PHOTO} of their bibs read "
                             "on each photo's faces")
    args = parser.parse_args()
    n_runners = args.runners or (2_000 if args.small else 20_000)
    n_faces = args.faces or (100_000 if args.small else 1_000_000)

    name = args.reuse or f"finishline_scale_{secrets.token_hex(4)}"
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.url.rsplit("/", 1)[0] + f"/{name}"
    keep = args.keep or bool(args.reuse)
    try:
        upgrade_to_head(url)
        t0 = time.perf_counter()
        if args.reuse:
            event_id, held, identities = reuse(url, n_runners)
            print(f"reusing {name}: {n_runners} runners, {n_faces} faces (as filled)", flush=True)
        else:
            event_id, held, identities = fill(url, n_runners, n_faces, start_list=args.start_list)
            listed = f" and a start list of {args.start_list}" if args.start_list else ""
            print(f"filled {n_runners} runners{listed}, {n_faces} faces in {n_faces // FACES_PER_PHOTO} photos "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
        if not args.quick:
            print(f"initial matching of every photo: {initial_matches(url, event_id):.1f} s", flush=True)
        per_photo(url, event_id, held, args.profile)
        new_runner(url, event_id, identities, args.profile)
        if not args.quick:
            threshold_change(url, event_id)
        one, cpu1, wait1, pg1, busy1 = throughput(url, event_id, held, 1)
        two, cpu2, wait2, pg2, busy2 = throughput(url, event_id, held, 2)
        print(f"matching step per photo: CPU {cpu1:.1f} ms with 1 worker, {cpu2:.1f} ms with 2; taking the shared "
              f"event lock {wait1:.2f} ms with 1, {wait2:.2f} ms with 2 (load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores, PostgreSQL on the same cores)")
        print(f"CPU split per photo: worker {cpu1:.1f} + its PostgreSQL backend {pg1:.1f} of {busy1:.1f} ms used on "
              f"the machine with 1 worker; {cpu2:.1f} + {pg2:.1f} of {busy2:.1f} ms with 2 (the rest: PostgreSQL's "
              f"WAL writer and checkpointer, other jobs)")
        print(f"matching: {one:.1f} photos/s with 1 worker, {two:.1f} with 2 (ratio {two / one:.2f}) "
              f"at {n_runners} runners, {n_faces} faces")
    finally:
        if keep:
            print(f"kept the database {name} (--reuse {name}; drop it when done)")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
