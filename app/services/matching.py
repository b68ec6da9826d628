"""Matching faces to runners: open-set, cosine similarity, one face per runner per photo.

The rule lives in `assign` (pure numpy): each face goes to its most similar runner when that
similarity reaches the event's threshold, and a runner keeps only its best face of each photo.
A "not me" (MatchRejection) takes the runner out of that photo before the argmax.

The database side recomputes the matches of whole photos from what is stored (`rematch_photos`),
so the outcome never depends on the order in which photos and runners arrived: a new photo is
rematched when processed (`on_photo_done`), a new runner rematches the photos it is similar to
(`match_runner`), a new threshold rematches the event in the background (`rematch_event_chunk`).

Locks on the event row, and why photos of one event still match in parallel:
- Changes to the runner set (enrol, delete, a start list: `runners_changed`), a new runner's
  matching, "not me", each rematch chunk and a photo that moves a bib link (below) take the row's
  exclusive lock (`lock_event`).
- A processed photo takes only a shared lock (`share_event`: FOR SHARE on PostgreSQL), which other
  photos' shared locks do not block. It computes its similarities before that, from a runner
  matrix cached per worker process and keyed by `events.runners_version` (`RunnerCache`), keeping
  only the runners over the threshold it read; it checks both under the lock and recomputes if
  the version moved or the threshold went down. At a new version the cache reads only the runner
  rows stamped since the version it holds (`runners.changed_version`), or all after a deletion.
  A reprocessed photo takes the shared lock before it deletes its old faces (and so their
  matches): the event is always locked before the rows it guards, never after (review C5,
  tests/app/test_lock_order.py).
So a runner enrolled while a photo is processed is seen by one side or the other (the photo's
check runs after the enrolment committed, or the enrolment waited for the photo's commit and its
MATCH_RUNNER search sees the faces), and unique(face_id) / unique(runner_id, photo_id) hold.

Bib numbers: photos with a bib read go through `bib_matching.resolve` instead of `assign` (the
face+bib rule is written down there); runners without a selfie are matched by the face their bib
was read on (`bib_matching.linked_faces`), a row of the runner matrix: a photo that moves such a
link bumps `runners_version` under the exclusive lock and stamps the runner, and the cache reads
the links of the stamped runners again (not every link: on race day after a start-list import
most photos move one). The search over the event's faces for a moved link's photos runs before
that lock, like a new runner's, and under it only the faces committed since are searched
(`Presearch`): the lock covers the rematch, not the search.

Privacy: only `privacy.matchable_faces()` are ever compared (not excluded by an erasure, template
not purged), and once an event's templates are purged a recompute keeps the stored matches
(`privacy.keep_stored_matches`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from app.db import Event, Face, Match, MatchRejection, MatchSource, Photo, PhotoStatus, Runner, utcnow
from app.db.session import UnitOfWork
from app.services import bib_matching
from app.services import events as event_service
from app.jobs import MATCH_RUNNER, REMATCH_EVENT
from app.services import privacy, webhooks
from app.services.face_matrix import SearchMark, face_matrices

# Candidate photos of a new runner are found with a slightly lower bar, so float rounding in a
# different matrix shape can never hide a face that the per-photo recompute would accept.
CANDIDATE_MARGIN = 1e-4
# Photos recomputed together. A background rematch takes the event lock per chunk this size, so
# uploads and enrolments wait at most one chunk.
PHOTOS_PER_CHUNK = 100
# Faces multiplied by the runner matrix at a time: against 20k runners a 10 MB block, of which only
# the columns that reach the threshold are kept (a chunk held whole was 144 MB).
FACE_ROWS_PER_PRODUCT = 128
REMATCH_PHOTOS_PER_CHUNK = PHOTOS_PER_CHUNK
RUNNER_ROWS_PER_READ = 4096  # a full read of an event's runners fetches them in parts this size


@dataclass(frozen=True)
class Assignment:
    """Parallel arrays, best first: face row, runner column, cosine similarity."""

    face: np.ndarray
    runner: np.ndarray
    similarity: np.ndarray


def assign(similarity: np.ndarray, photo_of_face: np.ndarray, threshold: float,
           blocked: tuple[np.ndarray, np.ndarray] | None = None) -> Assignment:
    """Match faces (rows) to runners (columns) of a (faces x runners) cosine-similarity matrix.

    `photo_of_face` labels each row with its photo (any integer or string codes); `blocked` is a
    pair of index arrays (face rows, runner columns) that must never match ("not me").
    """
    n_faces = similarity.shape[0]
    if n_faces == 0 or similarity.shape[1] == 0:
        empty = np.zeros(0, np.int64)
        return Assignment(empty, empty, np.zeros(0, np.float32))
    if blocked is not None and len(blocked[0]):
        similarity = similarity.copy()
        similarity[blocked[0], blocked[1]] = -np.inf
    best = similarity.argmax(axis=1)
    best_sim = similarity[np.arange(n_faces), best]
    face = np.flatnonzero(best_sim >= threshold)
    runner, sim, photo = best[face], best_sim[face], np.asarray(photo_of_face)[face]
    # One face per (runner, photo): sort by runner, photo, then best similarity first; keep the first.
    order = np.lexsort((face, -sim, photo, runner))
    face, runner, sim, photo = face[order], runner[order], sim[order], photo[order]
    first = np.ones(len(face), bool)
    first[1:] = (runner[1:] != runner[:-1]) | (photo[1:] != photo[:-1])
    face, runner, sim = face[first], runner[first], sim[first]
    best_first = np.lexsort((face, -sim))
    return Assignment(face[best_first], runner[best_first], sim[best_first])


def as_matrix(blobs: Iterable[bytes], dim: int) -> np.ndarray:
    """Stored float32 embeddings (one bytes value each) as an (n, dim) matrix."""
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)


# --- database side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerSet:
    """The runners of one event for one model: ids, and their embeddings as the columns of a
    (dim, n) matrix (a block of faces times it is one product over contiguous rows)."""

    ids: np.ndarray
    columns: np.ndarray

    @property
    def dim(self) -> int:
        return self.columns.shape[0]


@dataclass(frozen=True)
class _Cached:
    """One cache entry: the runners with a selfie (id order, `position` of each id) and the
    selfie-less runners' linked faces, as of `version`; `runners` is both, what callers get.
    `bib_runners`: every selfie-less runner with a bib (linked or not yet), to see deletions."""

    version: int
    selfies: RunnerSet
    position: dict[str, int]
    linked: RunnerSet
    runners: RunnerSet
    bib_runners: frozenset[str]


class RunnerCache:
    """Runner matrices per (event, model), valid for one `events.runners_version` each.

    One per worker process (module global below): a photo reads its event's runners again only
    after an enrolment or deletion, not for every photo, and then only what changed: the rows
    whose `changed_version` (stamped at every ORM write, app/db/runner.py) is at least the cached
    version replace or join the cached ones. At least, not above: a writer may flush its rows
    before bumping the version in the same transaction. A deletion is seen by a count: the rows
    the cache would hold against the rows stored, any difference reads everything again (an
    erasure, whose faces are excluded, always deletes a runner). Linked faces (selfie-less
    runners, bib_matching.linked_faces) depend on photos too: whatever moves a link stamps the
    runner (`_links_moved`), so only the changed runners' links are read again. Reading every
    link at every version cost a scan of the event's bib reads and faces per photo on race day
    (bench/scale.py --start-list).

    Only fill it in transactions that have not changed runners or faces themselves (a rollback
    would leave the cache holding a state that was never committed), or, for a transaction
    storing a new photo's faces, with `without_photo` set to it. Bounded to a few events, least
    recent out.
    """

    def __init__(self, max_events: int = 8) -> None:
        self._sets: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self.max_events = max_events
        self.loads = 0  # full reads of an event's runners (tests and bench/scale.py look)
        self.partial_loads = 0  # reads of only the rows changed since the cached version

    def get(self, uow: UnitOfWork, event_id: str, model_id: str, version: int) -> RunnerSet:
        return self.entry(uow, event_id, model_id, version).runners

    def entry(self, uow: UnitOfWork, event_id: str, model_id: str, version: int, *,
              without_photo: str | None = None) -> _Cached:
        """The entry at `version`; `without_photo`: a new photo whose faces this transaction
        holds uncommitted, left out of any read (see the class docstring)."""
        key = (event_id, model_id)
        with self._lock:
            hit = self._sets.get(key)
            if hit is not None and hit.version == version:
                self._sets.move_to_end(key)
                return hit
        entry = None
        if hit is not None and hit.version < version:
            entry = _changed_since(uow, event_id, model_id, hit, version, without_photo)
        full = entry is None
        if entry is None:
            entry = _load_entry(uow, event_id, model_id, version, without_photo)
        with self._lock:
            if full:
                self.loads += 1
            else:
                self.partial_loads += 1
            self._sets[key] = entry
            self._sets.move_to_end(key)
            while len(self._sets) > self.max_events:
                self._sets.popitem(last=False)
        return entry

    def clear(self) -> None:
        with self._lock:
            self._sets.clear()


def _load_entry(uow: UnitOfWork, event_id: str, model_id: str, version: int,
                without_photo: str | None = None) -> _Cached:
    selfies = _selfie_runners(uow, event_id, model_id)
    bib_runners = frozenset(uow.session.scalars(
        select(Runner.id).where(Runner.event_id == event_id, Runner.embedding.is_(None), Runner.bib.is_not(None))))
    return _entry(version, selfies, {runner_id: i for i, runner_id in enumerate(selfies.ids)},
                  _linked_runners(uow, event_id, model_id, without_photo=without_photo), bib_runners)


def _entry(version: int, selfies: RunnerSet, position: dict[str, int], linked: RunnerSet,
           bib_runners: frozenset[str]) -> _Cached:
    return _Cached(version, selfies, position, linked, _joined(selfies, linked), bib_runners)


def _joined(selfies: RunnerSet, linked: RunnerSet) -> RunnerSet:
    """The runner matrix: selfies, then linked faces, each in id order (as a full read gives them)."""
    if not len(linked.ids):
        return selfies
    if not len(selfies.ids):
        return linked
    return RunnerSet(np.concatenate([selfies.ids, linked.ids]), np.hstack([selfies.columns, linked.columns]))


def _with_links(linked: RunnerSet, refreshed: Iterable[str], rows: list[tuple[str, str, bytes]]) -> RunnerSet:
    """`linked` with the runners in `refreshed` replaced by `rows` (linked_faces of them), id order."""
    gone = set(refreshed)
    moved = _links_replaced_in_place(linked, gone, rows)
    if moved is not None:
        return moved
    kept = [i for i, runner_id in enumerate(linked.ids) if runner_id not in gone]
    if not rows:
        return RunnerSet(linked.ids[kept], np.ascontiguousarray(linked.columns[:, kept]))
    fresh = _runner_set([(runner_id, embedding) for runner_id, _, embedding in rows])
    if not kept:
        return fresh
    ids = np.concatenate([linked.ids[kept], fresh.ids])
    order = np.argsort(ids, kind="stable")
    return RunnerSet(ids[order], np.ascontiguousarray(np.hstack([linked.columns[:, kept], fresh.columns])[:, order]))


def _links_replaced_in_place(linked: RunnerSet, refreshed: set[str],
                             rows: list[tuple[str, str, bytes]]) -> RunnerSet | None:
    """The common case of `_with_links`, a few links that moved: every refreshed runner is held
    and still linked, so only their columns change (a copy of the matrix, no Python loop over its
    20k runners); None when runners join or leave."""
    if not len(linked.ids) or len(rows) != len(refreshed):
        return None
    wanted = np.array(sorted(refreshed), object)
    at = np.searchsorted(linked.ids, wanted)
    if (at >= len(linked.ids)).any() or list(linked.ids[at]) != list(wanted):
        return None
    index = dict(zip(wanted, at))
    vectors = {runner_id: np.frombuffer(embedding, np.float32) for runner_id, _, embedding in rows}
    if all(np.array_equal(linked.columns[:, index[r]], v) for r, v in vectors.items()):
        return linked  # nothing moved (most photos): the same matrix, no copy
    columns = linked.columns.copy()
    for runner_id, vector in vectors.items():
        columns[:, index[runner_id]] = vector
    return RunnerSet(linked.ids, columns)


def _changed_since(uow: UnitOfWork, event_id: str, model_id: str, cached: _Cached, version: int,
                   without_photo: str | None = None) -> _Cached | None:
    """`cached` brought to `version` from the rows changed since; None when only a full read can
    tell (a runner was deleted, or left this model)."""
    rows = uow.session.execute(
        select(Runner.id, Runner.model_id, Runner.embedding, Runner.bib)
        .where(Runner.event_id == event_id, Runner.changed_version >= cached.version).order_by(Runner.id)
    ).all()
    old = cached.selfies
    replaced: list[tuple[int, bytes]] = []
    added: list[tuple[str, bytes]] = []
    bib_runners = set(cached.bib_runners)
    for runner_id, row_model, embedding, bib in rows:
        if embedding is None and bib is not None:
            bib_runners.add(runner_id)
        else:
            bib_runners.discard(runner_id)
        at = cached.position.get(runner_id)
        if row_model != model_id or embedding is None:
            if at is not None:
                return None  # left this model's matrix (another model, or no selfie any more)
        elif at is not None:
            replaced.append((at, embedding))
        else:
            added.append((runner_id, embedding))
    stored = uow.session.scalar(select(func.count()).select_from(Runner).where(
        Runner.event_id == event_id, Runner.model_id == model_id, Runner.embedding.is_not(None)))
    if stored != len(old.ids) + len(added):
        return None  # a deletion (or a row written without its version): read everything
    stored_bib = uow.session.scalar(select(func.count()).select_from(Runner).where(
        Runner.event_id == event_id, Runner.embedding.is_(None), Runner.bib.is_not(None)))
    if stored_bib != len(bib_runners):
        return None  # a selfie-less runner deleted: read everything
    selfies, position = old, cached.position
    if replaced or added:
        dim = old.dim if len(old.ids) else len((replaced or added)[0][1]) // 4
        columns = np.empty((dim, len(old.ids) + len(added)), np.float32)
        if len(old.ids):
            columns[:, :len(old.ids)] = old.columns
        for at, embedding in replaced:
            columns[:, at] = np.frombuffer(embedding, np.float32)
        if added:
            columns[:, len(old.ids):] = as_matrix((e for _, e in added), dim).T
        ids = np.concatenate([old.ids, np.array([runner_id for runner_id, _ in added], object)])
        if added and len(old.ids) and min(runner_id for runner_id, _ in added) < old.ids[-1]:
            # kept in id order, as a full read gives them (ties of the argmax go to the same runner)
            order = np.argsort(ids, kind="stable")
            ids, columns = ids[order], np.ascontiguousarray(columns[:, order])
        selfies = RunnerSet(ids, columns)
        position = {runner_id: i for i, runner_id in enumerate(ids)} if added else position
    # links of the changed runners only: a moved link stamps its runner (`_links_moved`), a new
    # selfie takes a runner out of the linked ones, a new or changed bib may give one a link
    changed = [runner_id for runner_id, *_ in rows]
    refreshed = [runner_id for runner_id in changed if runner_id in bib_runners]
    links = bib_matching.linked_faces(uow, event_id, model_id, refreshed, without_photo=without_photo) if refreshed else []
    linked = _with_links(cached.linked, changed, links) if links or len(cached.linked.ids) else cached.linked
    return _entry(version, selfies, position, linked, frozenset(bib_runners))


runner_cache = RunnerCache()


def lock_event(uow: UnitOfWork, event_id: str) -> Event:
    """Take the event's exclusive lock until this transaction ends (see the module docstring).

    A no-op UPDATE, not SELECT ... FOR UPDATE: on PostgreSQL it takes the row's NO KEY UPDATE
    lock, which does not conflict with the KEY SHARE locks that inserting faces and matches take
    through their foreign keys (FOR UPDATE would deadlock with those); on SQLite any write takes
    the database's write lock, and the snapshot is current from then on.
    """
    uow.session.execute(update(Event).where(Event.id == event_id)
                        .values(match_threshold=Event.match_threshold)
                        .execution_options(synchronize_session=False))
    event = event_service.get_event(uow, event_id)
    uow.session.refresh(event)
    return event


def runners_changed(uow: UnitOfWork, event_id: str) -> Event:
    """Call before adding or removing runners: bumps the version every worker's cache checks,
    and locks the event like `lock_event` (the bump is the UPDATE)."""
    uow.session.execute(update(Event).where(Event.id == event_id)
                        .values(runners_version=Event.runners_version + 1)
                        .execution_options(synchronize_session=False))
    event = event_service.get_event(uow, event_id)
    uow.session.refresh(event)
    return event


@dataclass(frozen=True)
class EventState:
    runners_version: int
    match_threshold: float
    purged: bool  # the event's templates were deleted (retention, app/services/privacy.py)


def share_event(uow: UnitOfWork, event_id: str) -> EventState:
    """The shared lock of a photo writer: FOR SHARE on PostgreSQL (many photos at once, none while
    an exclusive holder runs); SQLite has one writer anyway, so there it is the write lock."""
    session = uow.session
    query = select(Event.runners_version, Event.match_threshold, Event.biometrics_purged_at).where(Event.id == event_id)
    if session.get_bind().dialect.name == "sqlite":
        lock_event(uow, event_id)
    else:
        query = query.with_for_update(read=True)
    row = session.execute(query).one()
    return EventState(row.runners_version, row.match_threshold, row.biometrics_purged_at is not None)


def read_event_state(uow: UnitOfWork, event_id: str) -> EventState:
    row = uow.session.execute(
        select(Event.runners_version, Event.match_threshold, Event.biometrics_purged_at)
        .where(Event.id == event_id)).one()
    return EventState(row.runners_version, row.match_threshold, row.biometrics_purged_at is not None)


def load_runners(uow: UnitOfWork, event_id: str, model_id: str) -> RunnerSet:
    """Every runner of the event for this model (with a selfie, then linked faces), read now."""
    return _joined(_selfie_runners(uow, event_id, model_id), _linked_runners(uow, event_id, model_id))


def _selfie_runners(uow: UnitOfWork, event_id: str, model_id: str) -> RunnerSet:
    """Ids and embeddings as plain rows (no ORM objects), in id order, a few thousand at a time
    (50k runners as rows at once would be 35 MB of Python objects), joined into one matrix."""
    result = uow.session.execute(
        select(Runner.id, Runner.embedding)
        .where(Runner.event_id == event_id, Runner.model_id == model_id, Runner.embedding.is_not(None))
        .order_by(Runner.id).execution_options(yield_per=RUNNER_ROWS_PER_READ)
    )
    parts = [_runner_set(rows) for rows in result.partitions()]
    if len(parts) < 2:
        return parts[0] if parts else _runner_set([])
    return RunnerSet(np.concatenate([p.ids for p in parts]), np.hstack([p.columns for p in parts]))


def _linked_runners(uow: UnitOfWork, event_id: str, model_id: str, *, without_photo: str | None = None) -> RunnerSet:
    return _runner_set([(runner_id, emb) for runner_id, _, emb
                        in bib_matching.linked_faces(uow, event_id, model_id, without_photo=without_photo)])


def _runner_set(rows) -> RunnerSet:  # type: ignore[no-untyped-def]
    if not rows:
        return RunnerSet(np.zeros(0, object), np.zeros((0, 0), np.float32))
    dim = len(rows[0][1]) // 4
    return RunnerSet(np.array([r[0] for r in rows], object),
                     np.ascontiguousarray(as_matrix((r[1] for r in rows), dim).T))


@dataclass
class _PhotoFaces:
    """The faces of some photos for one model, with their similarity to the runners (columns,
    `runner_ids`) that reach `threshold` for at least one of them; -inf where a face's own block
    did not reach it. Every runner left out is below the threshold for every face, and that is all
    `assign` and the bib rule ask of a runner below it, so the outcome is the full matrix's."""

    face_ids: np.ndarray
    photos: np.ndarray
    runner_ids: np.ndarray
    similarity: np.ndarray
    threshold: float


def _over_threshold(matrix: np.ndarray, runners: RunnerSet, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(runner columns reaching the threshold for some face, those similarities), computed a block
    of faces at a time."""
    blocks = []
    for start in range(0, len(matrix), FACE_ROWS_PER_PRODUCT):
        block = matrix[start:start + FACE_ROWS_PER_PRODUCT] @ runners.columns
        columns = np.flatnonzero((block >= threshold).any(axis=0))
        blocks.append((start, columns, block[:, columns]))
    kept = np.unique(np.concatenate([columns for _, columns, _ in blocks])) if blocks else np.zeros(0, np.int64)
    similarity = np.full((len(matrix), len(kept)), -np.inf, np.float32)
    for start, columns, values in blocks:
        similarity[start:start + len(values), np.searchsorted(kept, columns)] = values
    return kept, similarity


def _similarities(uow: UnitOfWork, event_id: str, photo_ids: list[str], runner_sets: dict[str, RunnerSet] | None,
                  version: int | None, threshold: float) -> list[_PhotoFaces]:
    """Faces of the photos against the runners, kept where they reach `threshold`; runners from
    `runner_sets`, else the process cache."""
    faces = uow.session.execute(
        select(Face.id, Face.photo_id, Face.model_id, Face.embedding)
        .where(Face.photo_id.in_(photo_ids), privacy.matchable_faces()).order_by(Face.photo_id, Face.id)
    ).all()
    out = []
    for model_id in sorted({f.model_id for f in faces}):
        if runner_sets is not None and model_id in runner_sets:
            runners = runner_sets[model_id]
        elif version is not None:
            runners = runner_cache.get(uow, event_id, model_id, version)
        else:
            runners = load_runners(uow, event_id, model_id)
        if runner_sets is not None:
            runner_sets[model_id] = runners
        if len(runners.ids) == 0:
            continue
        rows = [f for f in faces if f.model_id == model_id]
        columns, similarity = _over_threshold(as_matrix((f.embedding for f in rows), runners.dim), runners, threshold)
        out.append(_PhotoFaces(np.array([f.id for f in rows], object), np.array([f.photo_id for f in rows], object),
                               runners.ids[columns], similarity, threshold))
    return out


def _assign_and_write(uow: UnitOfWork, event_id: str, photo_ids: list[str], threshold: float,
                      computed: list[_PhotoFaces], *, none_stored: bool = False) -> None:
    """The assignment from precomputed similarities (`assign`, or the face+bib rule
    `bib_matching.resolve` when the photos have bib reads), then only the difference is written
    (`none_stored`: the photos can have no stored match, see `_write_difference`)."""
    rejected = set(uow.session.execute(
        select(MatchRejection.photo_id, MatchRejection.runner_id).where(MatchRejection.photo_id.in_(photo_ids))
    ).all())
    evidence = bib_matching.load_evidence(uow, event_id, photo_ids,
                                          {runner_id for part in computed for runner_id in part.runner_ids})
    candidates: list[bib_matching.Candidate] = []
    wanted: bib_matching.WantedMatches = {}
    for part in computed:
        if part.threshold > threshold:  # runners between the two thresholds were left out
            raise ValueError("similarities were kept for a higher threshold than the one applied")
        if evidence.reads:  # the face+bib rule decides, from every candidate pair
            candidates += bib_matching.candidates_from(part.similarity, part.face_ids, part.photos,
                                                       part.runner_ids, threshold)
            continue
        result = assign(part.similarity, part.photos, threshold, _blocked(rejected, part.photos, part.runner_ids))
        for f, r, sim in zip(result.face, result.runner, result.similarity):
            wanted[(part.photos[f], part.face_ids[f], part.runner_ids[r])] = bib_matching.Wanted(
                float(sim), MatchSource.FACE)
    if evidence.reads:
        wanted = bib_matching.resolve(candidates, evidence.reads, runner_of_bib=evidence.runner_of_bib,
                                      bib_of_runner=evidence.bib_of_runner, threshold=threshold,
                                      rejected={(p, r) for p, r in rejected})
    _write_difference(uow, event_id, photo_ids, wanted, none_stored=none_stored)


def rematch_photos(uow: UnitOfWork, event: Event, photo_ids: list[str],
                   runner_sets: dict[str, RunnerSet] | None = None, *, cached: bool = False) -> None:
    """Recompute the matches of these photos from scratch and write only the difference.

    Call with the event locked (`lock_event`). `runner_sets` caches runners per model id
    across calls (a chunked rematch); it is filled as needed, from this process's runner cache
    when `cached` (only for a transaction that has not changed runners or faces, see RunnerCache),
    else read from the database.
    """
    if not photo_ids:
        return
    if event.biometrics_purged_at is not None:  # retention over: no templates left to compare
        privacy.keep_stored_matches(uow, photo_ids)
        return
    computed = _similarities(uow, event.id, photo_ids, {} if runner_sets is None else runner_sets,
                             event.runners_version if cached else None, event.match_threshold)
    _assign_and_write(uow, event.id, photo_ids, event.match_threshold, computed)


def _blocked(rejected: set[tuple[str, str]], photos: np.ndarray,
             runner_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if not rejected:
        return None
    column = {runner_id: i for i, runner_id in enumerate(runner_ids)}
    rows, cols = [], []
    for photo_id, runner_id in rejected:  # one step per rejection, not per face
        if runner_id in column:
            hit = np.flatnonzero(photos == photo_id)
            rows.append(hit)
            cols.append(np.full(len(hit), column[runner_id]))
    if not rows:
        return None
    return np.concatenate(rows), np.concatenate(cols)


def _write_difference(uow: UnitOfWork, event_id: str, photo_ids: list[str],
                      wanted: bib_matching.WantedMatches, *, none_stored: bool = False) -> None:
    """`wanted` replaces the photos' stored matches. `none_stored`: the photos' faces are this
    transaction's first (a match needs a face, and nobody else sees them yet), so there is no
    stored match to read: one query less per processed photo."""
    session = uow.session
    current = [] if none_stored else session.execute(
        select(Match.id, Match.photo_id, Match.face_id, Match.runner_id, Match.source)
        .where(Match.photo_id.in_(photo_ids))
    ).all()
    def same(m) -> bool:  # type: ignore[no-untyped-def]
        w = wanted.get((m.photo_id, m.face_id, m.runner_id))
        return w is not None and w.source == m.source

    stale = [m.id for m in current if not same(m)]
    kept = {(m.photo_id, m.face_id, m.runner_id) for m in current if same(m)}
    if stale:  # deletes go first, so a face or slot that changes hands never breaks a unique key
        session.execute(delete(Match).where(Match.id.in_(stale)).execution_options(synchronize_session=False))
    added = [{"event_id": event_id, "face_id": face_id, "runner_id": runner_id, "photo_id": photo_id,
              "similarity": w.similarity, "source": w.source}
             for (photo_id, face_id, runner_id), w in wanted.items() if (photo_id, face_id, runner_id) not in kept]
    if added:  # one INSERT of plain rows: no ORM object is needed afterwards
        session.execute(insert(Match), added)
    gone = set(stale)
    webhooks.runners_matched(uow, {m.runner_id for m in current if m.id in gone} | {m["runner_id"] for m in added})


def on_photo_done(uow: UnitOfWork, photo: Photo, *, first_faces: bool = False) -> None:
    """A freshly processed photo: match its faces against every runner of its event.

    The similarities are computed first with the cached runner matrix; the shared lock is taken
    only to confirm the runner version and threshold and to write (module docstring). A photo
    with a selfie-less runner's bib on one of its faces takes the exclusive lock instead: that
    runner's link (their row of the runner matrix) may move to this photo, and then their other
    photos (by the old and the new face) are recomputed. `first_faces`: this transaction stored
    the photo's first faces (none are committed), so the runner matrices come from the cache,
    with only these runners' links read again (`_runners_with_photo`), not read whole, and the
    photo has no stored match to read.
    """
    event_id = photo.event_id
    with_bib = bib_matching.bib_runners_of_photo(uow, event_id, photo.id)
    if with_bib:
        searched = _presearch_moved_links(uow, event_id, photo.id, with_bib)
        event = lock_event(uow, event_id)
        # again, under the lock: one of them may have enrolled with a selfie meanwhile
        on_photo = bib_matching.bib_runners_of_photo(uow, event_id, photo.id)
        committed = event.runners_version  # under the exclusive lock: nobody else moves it
        links, moved = _links_on_photo(uow, event_id, photo.id, on_photo)
        if moved:
            event = _links_moved(uow, event_id, moved)
        runner_sets = _runners_with_photo(uow, event_id, photo.id, committed, on_photo, links) if first_faces else None
        rematch_photos(uow, event, [photo.id], runner_sets)
        for runner_id in moved:
            _rematch_runner_photos(uow, event, runner_id, searched.get(runner_id), runner_sets=runner_sets)
        return
    before = read_event_state(uow, event_id)
    computed = [] if before.purged else _similarities(uow, event_id, [photo.id], None, before.runners_version,
                                                      before.match_threshold)
    state = share_event(uow, event_id)
    if state.purged:  # retention over: the photo keeps no template
        privacy.keep_stored_matches(uow, [photo.id])
        return
    if (state.runners_version != before.runners_version or before.purged  # enrolment or deletion meanwhile
            or state.match_threshold < before.match_threshold):  # or a lower threshold: more runners count
        computed = _similarities(uow, event_id, [photo.id], None, state.runners_version, state.match_threshold)
    _assign_and_write(uow, event_id, [photo.id], state.match_threshold, computed, none_stored=first_faces)


def _links_on_photo(uow: UnitOfWork, event_id: str, photo_id: str,
                    runner_ids: list[str]) -> tuple[dict[str, list[tuple[str, str, bytes]]], list[str]]:
    """The links of these selfie-less runners for each face model of the photo's faces, and the
    runners among them linked to a face of this photo (their link moves when it changes)."""
    if not runner_ids:
        return {}, []
    faces = dict(uow.session.execute(select(Face.id, Face.model_id).where(Face.photo_id == photo_id)).all())
    links = {m: bib_matching.linked_faces(uow, event_id, m, runner_ids) for m in sorted(set(faces.values()))}
    moved = sorted({runner_id for rows in links.values() for runner_id, face_id, _ in rows if face_id in faces})
    return links, moved


def _presearch_moved_links(uow: UnitOfWork, event_id: str, photo_id: str,
                           runner_ids: list[str]) -> dict[str, dict[str, Presearch]]:
    """Before the lock: the searches over the event's faces for the links this photo would move
    (of these selfie-less runners with their bib on it; per runner, per face model), the largest
    part of moving one (40 ms CPU per 1M faces), so that photos moving links hold the exclusive
    lock for their rematch only. The links are read again under the lock; a search stands there
    only for the same face (`Presearch`)."""
    state = read_event_state(uow, event_id)
    if state.purged:
        return {}
    links, moved = _links_on_photo(uow, event_id, photo_id, runner_ids)
    wanted = set(moved)
    searched: dict[str, dict[str, Presearch]] = {}
    for model_id, rows in links.items():
        for runner_id, face_id, embedding in rows:
            if runner_id in wanted:
                searched.setdefault(runner_id, {})[model_id] = presearch(
                    uow, event_id, model_id, face_id, embedding, state.match_threshold)
    return searched


def _links_moved(uow: UnitOfWork, event_id: str, runner_ids: list[str]) -> Event:
    """The links of these selfie-less runners moved: bump the version and stamp them, so every
    worker's cache reads their links again (and only theirs, RunnerCache)."""
    event = runners_changed(uow, event_id)
    uow.session.execute(update(Runner).where(Runner.id.in_(runner_ids))
                        .values(changed_version=event.runners_version).execution_options(synchronize_session=False))
    return event


def _runners_with_photo(uow: UnitOfWork, event_id: str, photo_id: str, version: int, runner_ids: list[str],
                        links: dict[str, list[tuple[str, str, bytes]]]) -> dict[str, RunnerSet]:
    """The runner matrices as this transaction sees them, for a photo whose first faces it
    stored (uncommitted) with the bibs of `runner_ids` on them: the process cache at the committed
    `version` read without the photo, with those runners' `links` (per face model, read with it)."""
    sets = {}
    for model_id, rows in links.items():
        entry = runner_cache.entry(uow, event_id, model_id, version, without_photo=photo_id)
        linked = _with_links(entry.linked, runner_ids, rows)
        sets[model_id] = entry.runners if linked is entry.linked else _joined(entry.selfies, linked)
    return sets


def photo_faces_replaced(uow: UnitOfWork, event_id: str, photo_id: str, replace: Callable[[], None]) -> None:
    """Run `replace`, which removes the photo's faces, bib reads and matches (deleting the photo,
    by cascade, or reprocessing it, which writes new ones); around it, move the bib links that
    were on them.

    A selfie-less runner is matched by the largest face their bib was read on: when that face is
    in this photo, their row of the runner matrix changes (`runners_changed`, so every worker's
    cache reads it again) and their photos are matched again with the next face (a new face of
    this photo, when it is reprocessed and the bib is read again), or none. Other photos'
    matches never depend on this photo's faces.
    """
    _, moved = _links_on_photo(uow, event_id, photo_id, bib_matching.bib_runners_of_photo(uow, event_id, photo_id))
    event = _links_moved(uow, event_id, moved) if moved else None
    replace()
    if moved:
        uow.session.flush()  # the new faces and reads, for the runners' next link
    for runner_id in moved:
        _rematch_runner_photos(uow, event, runner_id)  # type: ignore[arg-type]


def candidate_photos(uow: UnitOfWork, event_id: str, model_id: str, vector: np.ndarray,
                     threshold: float) -> list[str]:
    """Photos of the event with a matchable face at least `threshold` similar to `vector` (a
    superset).

    From this process's in-memory face matrix of the event (app/services/face_matrix.py), read
    from the database once and then only for photos processed (or faces excluded) since; no
    Python object per face.
    """
    return face_matrices.candidates(uow, event_id, model_id, vector, threshold)


@dataclass(frozen=True)
class Presearch:
    """A runner's search over the event's faces made before the event lock, for one face model:
    the face searched for (None: their selfie), the threshold, the photos found, and where the
    search left the face matrix. Under the lock it stands when the runner still has that face and
    the threshold was not lowered; the rows appended since (photos committed meanwhile) are then
    searched on their own (`face_matrix.SearchMark`)."""

    face_id: str | None
    threshold: float
    photos: frozenset[str]
    mark: SearchMark | None

    def stands_for(self, face_id: str | None, threshold: float) -> bool:
        """Whether it still covers a search for `face_id` at `threshold` (the one under the lock)."""
        return self.mark is not None and self.face_id == face_id and threshold >= self.threshold


def presearch(uow: UnitOfWork, event_id: str, model_id: str, face_id: str | None, embedding: bytes,
              threshold: float) -> Presearch:
    photos, mark = face_matrices.search(uow, event_id, model_id, np.frombuffer(embedding, dtype=np.float32),
                                        threshold - CANDIDATE_MARGIN)
    return Presearch(face_id, threshold, frozenset(photos), mark)


def match_runner(uow: UnitOfWork, runner_id: str) -> int:
    """A new (or re-enrolled) runner: rematch every photo with a face similar enough to them, and
    the photos they hold now; returns their matches.

    The search over the event's faces runs before the lock; photos committed after it started
    were matched against this runner by their own `on_photo_done` (the enrolment committed
    first). Harmless to run twice (a redelivered task): the second run writes no difference.
    """
    runner = uow.session.get(Runner, runner_id)
    if runner is None or (runner.embedding is None and not runner.bib):
        return 0  # deleted meanwhile
    state = read_event_state(uow, runner.event_id)
    searched: dict[str, Presearch] = {}
    if runner.embedding is not None and not state.purged:  # the search over the event's faces, before the lock
        model_id = runner.model_id or ""
        searched[model_id] = presearch(uow, runner.event_id, model_id, None, runner.embedding, state.match_threshold)
    event = lock_event(uow, runner.event_id)
    _rematch_runner_photos(uow, event, runner_id, searched, cached=True)
    runner.matched_at = utcnow()
    webhooks.runners_matched(uow, [runner_id])  # their matching finished, changed or not
    return uow.session.scalar(select(func.count()).select_from(Match).where(Match.runner_id == runner_id)) or 0


def _rematch_runner_photos(uow: UnitOfWork, event: Event, runner_id: str,
                           searched: dict[str, Presearch] | None = None, *, cached: bool = False,
                           runner_sets: dict[str, RunnerSet] | None = None) -> None:
    """Rematch every photo the runner may be in: a face similar to theirs (selfie, or the face
    their bib was read on), their bib read, or a match they hold now (a re-enrolled runner, new
    template, may lose photos the old one matched). Call with the event locked.

    Similar faces come from the face matrix (`candidate_photos`); `searched`: searches for them
    made before the lock, per face model (`Presearch`), completed here by the faces that came
    after them. `cached`: the runner matrices may come from the process cache (see
    `rematch_photos`); under the lock its version includes this runner. `runner_sets`: the
    matrices this transaction already holds (see `rematch_photos`).
    """
    runner = uow.session.get(Runner, runner_id)
    probes: list[tuple[str, str | None, bytes]] = []  # (face model, face id or None for a selfie, embedding)
    if event.biometrics_purged_at is not None:
        pass  # no templates left: the stored matches stand (rematch_photos)
    elif runner.embedding is not None:
        probes.append((runner.model_id or "", None, runner.embedding))
    else:
        probes += [(m, face_id, emb) for m in bib_matching.bib_face_models(uow, event.id, runner_id)
                   for _, face_id, emb in bib_matching.linked_faces(uow, event.id, m, [runner_id])]
    found: set[str] = set(bib_matching.photos_with_bib(uow, event.id, runner.bib))
    found |= set(uow.session.scalars(select(Match.photo_id).where(Match.runner_id == runner_id)))
    for model_id, face_id, embedding in probes:
        vector = np.frombuffer(embedding, dtype=np.float32)
        bar = event.match_threshold - CANDIDATE_MARGIN
        before = (searched or {}).get(model_id)
        if before is not None and before.stands_for(face_id, event.match_threshold):
            found |= before.photos
            found |= set(face_matrices.search(uow, event.id, model_id, vector, bar, after=before.mark)[0])
        else:
            found |= set(candidate_photos(uow, event.id, model_id, vector, bar))
    candidates = sorted(found)
    runner_sets = {} if runner_sets is None else runner_sets
    for start in range(0, len(candidates), PHOTOS_PER_CHUNK):
        rematch_photos(uow, event, candidates[start:start + PHOTOS_PER_CHUNK], runner_sets, cached=cached)


def sweep_unmatched_runners(uow: UnitOfWork, *, stale_after: timedelta, limit: int = 500) -> list[str]:
    """Re-send MATCH_RUNNER for runners enrolled longer ago than `stale_after` and never matched
    (their message was lost); a duplicate run writes no difference. `consent_at` is the time of
    the last enrolment (a re-enrolment sets it again), `created_at` only the first."""
    cutoff = utcnow() - stale_after
    runner_ids = list(uow.session.scalars(
        select(Runner.id).where(Runner.matched_at.is_(None),
                                Runner.embedding.is_not(None) | Runner.bib.is_not(None),
                                Runner.consent_at < cutoff).order_by(Runner.consent_at).limit(limit)
    ))
    for runner_id in runner_ids:
        uow.send_task(MATCH_RUNNER, runner_id)
    return runner_ids


def sweep_unfinished_rematches(uow: UnitOfWork) -> list[str]:
    """Re-send REMATCH_EVENT for events whose background rematch stopped (lost message, crash).

    A duplicate chunk is harmless (it writes no difference); the cursor only moves forward.
    """
    event_ids = list(uow.session.scalars(select(Event.id).where(Event.rematch_done < Event.rematch_total)))
    for event_id in event_ids:
        uow.send_task(REMATCH_EVENT, event_id)
    return event_ids


def rematch_event_chunk(uow: UnitOfWork, event_id: str, *, chunk: int = REMATCH_PHOTOS_PER_CHUNK) -> bool:
    """One chunk of the background rematch after a threshold change; True when more remain.

    The done photos are walked in id order from `rematch_cursor` (photos done later matched
    themselves with the new threshold); `rematch_done` is the progress shown in the stats. Each
    chunk is its own transaction with the event locked, so uploads and enrolments interleave.
    """
    event = lock_event(uow, event_id)
    if event.rematch_done >= event.rematch_total:
        return False
    query = select(Photo.id).where(Photo.event_id == event_id, Photo.status == PhotoStatus.done.value)
    if event.rematch_cursor is not None:
        query = query.where(Photo.id > event.rematch_cursor)
    photo_ids = list(uow.session.scalars(query.order_by(Photo.id).limit(chunk)))
    rematch_photos(uow, event, photo_ids, cached=True)  # this transaction changes matches only
    if len(photo_ids) < chunk:
        event.rematch_done = event.rematch_total
    else:
        event.rematch_done = min(event.rematch_done + len(photo_ids), event.rematch_total - 1)
        event.rematch_cursor = photo_ids[-1]
    return event.rematch_done < event.rematch_total


def start_rematch(uow: UnitOfWork, event: Event, *, queue: bool = True) -> None:
    """Restart the rematch of every done photo from the first (call with the event locked);
    `queue` sends REMATCH_EVENT after commit."""
    done = uow.session.scalar(select(func.count()).select_from(Photo).where(
        Photo.event_id == event.id, Photo.status == PhotoStatus.done.value)) or 0
    event.rematch_total, event.rematch_done, event.rematch_cursor = done, 0, None
    if done and queue:
        uow.send_task(REMATCH_EVENT, event.id)


def rematch_event(uow: UnitOfWork, event: Event) -> None:
    """Recompute every match of the event in this one transaction (tools, small events)."""
    start_rematch(uow, event, queue=False)
    uow.session.flush()
    while rematch_event_chunk(uow, event.id, chunk=PHOTOS_PER_CHUNK):
        pass


_UNSET = object()


def update_event(uow: UnitOfWork, event_id: str, *, name: str | None = None,
                 starts_on: date | None | object = _UNSET, match_threshold: float | None = None,
                 retention_days: int | None = None) -> Event:
    """Edit an event; a new threshold queues a background rematch (progress in the stats).

    It lives here, not in the events service, because the threshold is the part with rules.
    """
    event = lock_event(uow, event_id)
    if name is not None:
        event.name = name
    if starts_on is not _UNSET:
        event.starts_on = starts_on  # type: ignore[assignment]
    if retention_days is not None:
        event.retention_days = retention_days
    if match_threshold is not None and match_threshold != event.match_threshold:
        event.match_threshold = match_threshold
        start_rematch(uow, event)
    uow.session.flush()
    return event
