"""Matching faces to runners: open-set, cosine similarity, one face per runner per photo.

The rule lives in `assign` (pure numpy): each face goes to its most similar runner when that
similarity reaches the event's threshold, and a runner keeps only its best face of each photo.
A "not me" (MatchRejection) takes the runner out of that photo before the argmax.

The database side recomputes the matches of whole photos from what is stored (`rematch_photos`),
so the outcome never depends on the order in which photos and runners arrived: a new photo is
rematched when processed (`on_photo_done`), a new runner rematches the photos it is similar to
(`match_runner`), a new threshold rematches the event. Writers of one event take its row lock
first (`lock_event`), so a runner enrolled while a photo is being processed is seen by one side
or the other, and unique(face_id) / unique(runner_id, photo_id) hold whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from sqlalchemy import delete, select, update

from app.db import Event, Face, Match, MatchRejection, Photo, PhotoStatus, Runner, utcnow
from app.db.session import UnitOfWork
from app.services import events as event_service
from app.jobs import MATCH_RUNNER
from app.services import privacy, webhooks

# Candidate photos of a new runner are found with a slightly lower bar, so float rounding in a
# different matrix shape can never hide a face that the per-photo recompute would accept.
CANDIDATE_MARGIN = 1e-4
PHOTOS_PER_CHUNK = 500


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
    """The enrolled runners of one event for one model: ids and their (n, dim) embeddings."""

    ids: np.ndarray
    matrix: np.ndarray


def lock_event(uow: UnitOfWork, event_id: str) -> Event:
    """Serialise the writers of an event's matches until this transaction ends.

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


def load_runners(uow: UnitOfWork, event_id: str, model_id: str) -> RunnerSet:
    rows = uow.session.execute(
        select(Runner.id, Runner.embedding)
        .where(Runner.event_id == event_id, Runner.model_id == model_id, Runner.embedding.is_not(None))
        .order_by(Runner.id)
    ).all()
    return _runner_set(rows)


def _runner_set(rows) -> RunnerSet:
    if not rows:
        return RunnerSet(np.zeros(0, object), np.zeros((0, 0), np.float32))
    dim = len(rows[0][1]) // 4
    return RunnerSet(np.array([r[0] for r in rows], object), as_matrix((r[1] for r in rows), dim))


def rematch_photos(uow: UnitOfWork, event: Event, photo_ids: list[str],
                   runner_sets: dict[str, RunnerSet] | None = None) -> None:
    """Recompute the matches of these photos from scratch and write only the difference.

    Call with the event locked (`lock_event`). `runner_sets` caches runners per model id
    across calls (a whole-event rematch); it is filled as needed.
    """
    if not photo_ids:
        return
    if event.biometrics_purged_at is not None:  # retention over: no templates left to compare
        privacy.keep_stored_matches(uow, photo_ids)
        return
    runner_sets = {} if runner_sets is None else runner_sets
    session = uow.session
    faces = session.execute(
        select(Face.id, Face.photo_id, Face.model_id, Face.embedding)
        .where(Face.photo_id.in_(photo_ids), privacy.matchable_faces()).order_by(Face.photo_id, Face.id)
    ).all()
    rejected = set(session.execute(
        select(MatchRejection.photo_id, MatchRejection.runner_id).where(MatchRejection.photo_id.in_(photo_ids))
    ).all())
    wanted: dict[tuple[str, str], tuple[str, float]] = {}  # (face, runner) -> (photo, similarity)
    for model_id in {f.model_id for f in faces}:
        rows = [f for f in faces if f.model_id == model_id]
        if model_id not in runner_sets:
            runner_sets[model_id] = load_runners(uow, event.id, model_id)
        runners = runner_sets[model_id]
        if len(runners.ids) == 0:
            continue
        face_ids = np.array([f.id for f in rows], object)
        photos = np.array([f.photo_id for f in rows], object)
        matrix = as_matrix((f.embedding for f in rows), runners.matrix.shape[1])
        result = assign(matrix @ runners.matrix.T, photos, event.match_threshold,
                        _blocked(rejected, photos, runners.ids))
        for f, r, s in zip(result.face, result.runner, result.similarity):
            wanted[(face_ids[f], runners.ids[r])] = (photos[f], float(s))
    _write_difference(uow, event.id, photo_ids, wanted)


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
                      wanted: dict[tuple[str, str], tuple[str, float]]) -> None:
    session = uow.session
    current = session.execute(
        select(Match.id, Match.face_id, Match.runner_id).where(Match.photo_id.in_(photo_ids))
    ).all()
    stale = [m.id for m in current if (m.face_id, m.runner_id) not in wanted]
    kept = {(m.face_id, m.runner_id) for m in current}
    if stale:  # deletes go first, so a face or slot that changes hands never breaks a unique key
        session.execute(delete(Match).where(Match.id.in_(stale)).execution_options(synchronize_session=False))
    added = [Match(event_id=event_id, face_id=face_id, runner_id=runner_id, photo_id=photo_id, similarity=sim)
             for (face_id, runner_id), (photo_id, sim) in wanted.items() if (face_id, runner_id) not in kept]
    session.add_all(added)
    session.flush()
    gone = set(stale)
    webhooks.runners_matched(uow, {m.runner_id for m in current if m.id in gone} | {m.runner_id for m in added})


def on_photo_done(uow: UnitOfWork, photo: Photo) -> None:
    """A freshly processed photo: match its faces against every runner of its event."""
    event = lock_event(uow, photo.event_id)
    rematch_photos(uow, event, [photo.id])


def match_runner(uow: UnitOfWork, runner_id: str) -> int:
    """A new (or re-enrolled) runner: rematch every photo with a face similar enough to them, and
    the photos they hold now; returns their matches.

    Harmless to run twice (a redelivered task): the second run writes no difference.
    """
    runner = uow.session.get(Runner, runner_id)
    if runner is None or runner.embedding is None:
        return 0  # deleted meanwhile
    event = lock_event(uow, runner.event_id)
    rows = uow.session.execute(
        select(Face.photo_id, Face.embedding).where(Face.event_id == event.id, Face.model_id == runner.model_id,
                                                    privacy.matchable_faces())
    ).all()
    vector = np.frombuffer(runner.embedding, dtype=np.float32)
    photos = np.array([r.photo_id for r in rows], object)
    similarity = as_matrix((r.embedding for r in rows), len(vector)) @ vector
    candidates = np.unique(photos[similarity >= event.match_threshold - CANDIDATE_MARGIN]).tolist()
    # a re-enrolled runner (new template) may lose photos the old one matched: recompute those too
    candidates = sorted(set(candidates).union(
        uow.session.scalars(select(Match.photo_id).where(Match.runner_id == runner_id))))
    for start in range(0, len(candidates), PHOTOS_PER_CHUNK):
        rematch_photos(uow, event, candidates[start:start + PHOTOS_PER_CHUNK])
    runner.matched_at = utcnow()
    webhooks.runners_matched(uow, [runner_id])  # their matching finished, changed or not
    return len(uow.session.scalars(select(Match.id).where(Match.runner_id == runner_id)).all())


def sweep_unmatched_runners(uow: UnitOfWork, *, stale_after: timedelta, limit: int = 500) -> list[str]:
    """Re-send MATCH_RUNNER for runners enrolled longer ago than `stale_after` and never matched
    (their message was lost); a duplicate run writes no difference. `consent_at` is the time of
    the last enrolment (a re-enrolment sets it again), `created_at` only the first."""
    cutoff = utcnow() - stale_after
    runner_ids = list(uow.session.scalars(
        select(Runner.id).where(Runner.matched_at.is_(None), Runner.embedding.is_not(None),
                                Runner.consent_at < cutoff).order_by(Runner.consent_at).limit(limit)
    ))
    for runner_id in runner_ids:
        uow.send_task(MATCH_RUNNER, runner_id)
    return runner_ids


def rematch_event(uow: UnitOfWork, event: Event) -> None:
    """Recompute every match of the event (after a threshold change). Call with the event locked."""
    photo_ids = list(uow.session.scalars(
        select(Photo.id).where(Photo.event_id == event.id, Photo.status == PhotoStatus.done.value)
        .order_by(Photo.id)
    ))
    runner_sets: dict[str, RunnerSet] = {}
    for start in range(0, len(photo_ids), PHOTOS_PER_CHUNK):
        rematch_photos(uow, event, photo_ids[start:start + PHOTOS_PER_CHUNK], runner_sets)


_UNSET = object()


def update_event(uow: UnitOfWork, event_id: str, *, name: str | None = None,
                 starts_on: date | None | object = _UNSET, match_threshold: float | None = None,
                 retention_days: int | None = None) -> Event:
    """Edit an event; a new threshold recomputes all its matches in this transaction.

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
        uow.session.flush()
        rematch_event(uow, event)
    return event
