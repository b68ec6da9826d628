"""Bib numbers beside faces: who is in a photo when a bib was read there.

The rule (`resolve`, pure Python over one batch of photos; `matching.rematch_photos` calls it
when any of the photos has a bib read, and `assign` alone decides the others):

1. A bib read on a photo puts the runner enrolled with that number in the photo. Runners are
   enrolled with a bib by the selfie form (optional field) or by the organiser's start list.
2. A face whose torso carries bib N (`BibRead.face_id`) belongs to the runner R enrolled with N:
   the match's source is "face+bib" when the face also matches R's face (similarity at least the
   event's threshold), "bib" when it does not or R has no face on file.
3. The bib contradicts a face match: a face carrying bib N is given to another runner S on its
   face alone only with a much higher similarity (threshold + CONTRADICTED_MARGIN), when
   - N belongs to an enrolled runner (then S is anyone else), or
   - N belongs to nobody enrolled and S was enrolled with a different bib.
   (S without a bib on file is not contradicted by an unknown number: the face may be theirs.)
   If S wins the face that way, R of rule 2 still gets the photo by the bib alone (no face):
   the number was read there, so its runner is most likely next to S.
4. Faces without a read bib match as before (`matching.assign`): each face its most similar
   runner at or above the threshold; "face".
5. One match per runner and photo: face+bib, then a bib on a face, then a face alone, then a bib
   alone; then the higher similarity. A read without a face (whole-photo pass) gives a bib-only
   match (face_id and similarity null) to a runner not otherwise in the photo, and turns a face
   match of the same runner in that photo into "face+bib". A "not me" (MatchRejection) removes the runner from
   that photo whatever the source.
6. Across photos (`linked_faces`): a runner with a bib but no selfie (a start-list runner) is
   linked to the face that carried their bib, the largest such face of the event; that face's
   embedding stands in for a selfie, so the same runner is found by face in photos where the
   bib is hidden ("face"). The link is a pure function of what is stored (largest face, then
   id), so the outcome does not depend on the order in which photos arrive; a photo that
   changes a runner's link rematches the photos of the new face (`matching.on_photo_done`).

A runner with both a bib and a selfie gains the photos where only the bib is read and the photos
where only the face matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from app.db import BibRead, Face, MatchSource, Runner
from app.db.session import UnitOfWork
from app.services import privacy

# How much more similar a face must be to a runner its bib contradicts. SFace's same-race
# impostors sit at 0.43-0.47 and true matches at 0.47-0.84 (shared/MODELS.md): with the default
# threshold 0.48 a contradicted face needs 0.63, which only the clearest true matches reach.
CONTRADICTED_MARGIN = 0.15


@dataclass(frozen=True)
class Candidate:
    """A face similar enough (>= threshold) to a runner's face (selfie or linked face)."""

    photo_id: str
    face_id: str
    runner_id: str
    similarity: float


@dataclass(frozen=True)
class Read:
    """A bib read on a photo; `face_id` the face whose torso holds it, or None."""

    photo_id: str
    face_id: str | None
    number: str
    score: float


@dataclass(frozen=True)
class Wanted:
    similarity: float | None
    source: str


# (photo_id, face_id or None, runner_id) -> what the match should be
WantedMatches = dict[tuple[str, str | None, str], Wanted]

_RANK = {MatchSource.FACE_BIB: 0, MatchSource.BIB: 1, MatchSource.FACE: 2}  # +2 without a face


def resolve(candidates: Iterable[Candidate], reads: Iterable[Read], *, runner_of_bib: dict[str, str],
            bib_of_runner: dict[str, str], threshold: float,
            rejected: set[tuple[str, str]] = frozenset()) -> WantedMatches:  # type: ignore[assignment]
    """The matches of a batch of photos under the rule in the module docstring.

    `runner_of_bib`: number -> the runner enrolled with it; `bib_of_runner` its inverse (runners
    with a bib); `rejected`: (photo_id, runner_id) pairs marked "not me".
    """
    strong = threshold + CONTRADICTED_MARGIN
    by_face: dict[str, list[Candidate]] = {}
    photo_of_face: dict[str, str] = {}
    for c in candidates:
        if (c.photo_id, c.runner_id) not in rejected and c.similarity >= threshold:
            by_face.setdefault(c.face_id, []).append(c)
            photo_of_face[c.face_id] = c.photo_id
    bib_on_face: dict[str, Read] = {}
    loose: list[Read] = []
    for read in reads:
        if read.face_id is None:
            loose.append(read)
            continue
        photo_of_face[read.face_id] = read.photo_id
        best = bib_on_face.get(read.face_id)
        if best is None or read.score > best.score:
            bib_on_face[read.face_id] = read

    # proposals: (photo, face or None, runner, similarity or None, source)
    proposals: list[tuple[str, str | None, str, float | None, str]] = []
    for face_id, photo_id in photo_of_face.items():
        options = by_face.get(face_id, [])
        read = bib_on_face.get(face_id)
        if read is None:  # rule 4
            if options:
                best = max(options, key=lambda c: (c.similarity, c.runner_id))
                proposals.append((photo_id, face_id, best.runner_id, best.similarity, MatchSource.FACE))
            continue
        owner = runner_of_bib.get(read.number)
        if owner is not None and (photo_id, owner) in rejected:
            owner = None  # "not me" for the bib's runner: the face may still be someone else's
        similar = {c.runner_id: c.similarity for c in options}

        def contradicted(runner_id: str, number: str = read.number, owner: str | None = owner) -> bool:
            if owner is not None:
                return runner_id != owner
            known = bib_of_runner.get(runner_id)
            return known is not None and known != number

        rivals = [c for c in options if not contradicted(c.runner_id) or c.similarity >= strong]
        rivals = [c for c in rivals if c.runner_id != owner]
        rival = max(rivals, key=lambda c: (c.similarity, c.runner_id)) if rivals else None
        own_sim = similar.get(owner) if owner is not None else None
        if owner is not None and (rival is None or rival.similarity < strong or
                                  (own_sim is not None and own_sim >= rival.similarity)):
            source = MatchSource.FACE_BIB if own_sim is not None else MatchSource.BIB
            proposals.append((photo_id, face_id, owner, own_sim, source))  # rule 2
            continue
        if rival is not None:
            proposals.append((photo_id, face_id, rival.runner_id, rival.similarity, MatchSource.FACE))
        if owner is not None:  # rule 3, second half: the bib's runner is in the photo all the same
            proposals.append((photo_id, None, owner, None, MatchSource.BIB))
    for read in loose:  # rule 1 for reads without a face
        owner = runner_of_bib.get(read.number)
        if owner is not None and (read.photo_id, owner) not in rejected:
            proposals.append((read.photo_id, None, owner, None, MatchSource.BIB))
    return _one_per_runner_and_photo(proposals)


def _one_per_runner_and_photo(proposals: Sequence[tuple[str, str | None, str, float | None, str]]) -> WantedMatches:
    def priority(p: tuple[str, str | None, str, float | None, str]) -> tuple:
        photo_id, face_id, runner_id, sim, source = p
        # face+bib, then a bib on a face, then a face alone, then a bib alone; the better
        # similarity first; ids break ties so the outcome never depends on input order
        rank = _RANK[source] + (2 if face_id is None else 0)
        return (rank, -(sim if sim is not None else -1.0), face_id or "", runner_id)

    bib_seen = {(runner_id, photo_id) for photo_id, face_id, runner_id, _, source in proposals
                if face_id is None and source == MatchSource.BIB}
    wanted: WantedMatches = {}
    taken_slots: set[tuple[str, str]] = set()
    taken_faces: set[str] = set()
    for p in sorted(proposals, key=priority):
        photo_id, face_id, runner_id, sim, source = p
        if (runner_id, photo_id) in taken_slots or (face_id is not None and face_id in taken_faces):
            continue
        taken_slots.add((runner_id, photo_id))
        if face_id is not None:
            taken_faces.add(face_id)
        if source == MatchSource.FACE and (runner_id, photo_id) in bib_seen:
            source = MatchSource.FACE_BIB  # their face here, and their number read in the photo
        wanted[(photo_id, face_id, runner_id)] = Wanted(sim, source)
    return wanted


def candidates_from(similarity: np.ndarray, face_ids: np.ndarray, photos: np.ndarray, runner_ids: np.ndarray,
                    threshold: float) -> list[Candidate]:
    """The (face, runner) pairs of a (faces x runners) cosine matrix at or above the threshold."""
    rows, cols = np.nonzero(similarity >= threshold)
    return [Candidate(photos[r], face_ids[r], runner_ids[c], float(similarity[r, c])) for r, c in zip(rows, cols)]


# --- database side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BibEvidence:
    """What `resolve` needs from the database for a batch of photos."""

    reads: list[Read]
    runner_of_bib: dict[str, str]
    bib_of_runner: dict[str, str]


# Past this many candidates, every enrolled bib is read instead (an IN list that long costs more,
# and SQLite bounds the parameters of a statement).
MAX_CANDIDATES_LISTED = 5000


def load_evidence(uow: UnitOfWork, event_id: str, photo_ids: list[str],
                  candidates: Iterable[str] | None = None) -> BibEvidence:
    """The photos' reads and the bibs around them; `candidates`: the runners their faces may go to
    (the only ones rule 3 asks the bib of), else every runner with a bib."""
    rows = uow.session.execute(
        select(BibRead.photo_id, BibRead.face_id, BibRead.number, BibRead.score)
        .where(BibRead.photo_id.in_(photo_ids)).order_by(BibRead.photo_id, BibRead.id)
    ).all()
    reads = [Read(r.photo_id, r.face_id, r.number, r.score) for r in rows]
    bib_of_runner: dict[str, str] = {}
    runner_of_bib: dict[str, str] = {}
    if reads:
        numbers = sorted({r.number for r in reads})
        for runner_id, bib in uow.session.execute(
            select(Runner.id, Runner.bib).where(Runner.event_id == event_id, Runner.bib.in_(numbers))
            .order_by(Runner.created_at, Runner.id)
        ).all():
            runner_of_bib.setdefault(bib, runner_id)  # the start list keeps bibs unique; first wins
        # the candidates' bibs, for rule 3 (a runner whose number differs from the one read)
        query = select(Runner.id, Runner.bib).where(Runner.event_id == event_id, Runner.bib.is_not(None))
        listed = sorted(set(candidates)) if candidates is not None else None
        if listed is not None and len(listed) <= MAX_CANDIDATES_LISTED:
            query = query.where(Runner.id.in_(listed))
        for runner_id, bib in uow.session.execute(query).all():
            bib_of_runner[runner_id] = bib
    return BibEvidence(reads, runner_of_bib, bib_of_runner)


def linked_faces(uow: UnitOfWork, event_id: str, model_id: str, runner_ids: Sequence[str] | None = None, *,
                 without_photo: str | None = None) -> list[tuple[str, str, bytes]]:
    """(runner_id, face_id, embedding) of every selfie-less runner with a bib whose number was read
    on a face of this model: the largest such face (then the lowest face id) stands in for a selfie.

    `without_photo`: as if that photo had no faces (the committed state, to a transaction that is
    storing a new photo's faces)."""
    # Ranked in the database, and only the winners' embeddings fetched: a start list's runners
    # have their bib read on a dozen faces each, and fetching every one of them (and its 512-byte
    # template) to keep one made this the largest cost of matching a photo (bench/scale.py --start-list).
    rank = func.row_number().over(partition_by=Runner.id, order_by=(Face.size_px.desc(), Face.id))
    ranked = (
        select(Runner.id.label("runner_id"), Face.id.label("face_id"), rank.label("rank"))
        .join(BibRead, (BibRead.event_id == Runner.event_id) & (BibRead.number == Runner.bib))
        .join(Face, Face.id == BibRead.face_id)
        .where(Runner.event_id == event_id, Runner.embedding.is_(None), Face.model_id == model_id,
               privacy.matchable_faces())
    )
    if runner_ids is not None:
        ranked = ranked.where(Runner.id.in_(list(runner_ids)))
    if without_photo is not None:
        ranked = ranked.where(Face.photo_id != without_photo)
    best = ranked.subquery()
    rows = uow.session.execute(
        select(best.c.runner_id, best.c.face_id, Face.embedding).join(Face, Face.id == best.c.face_id)
        .where(best.c.rank == 1).order_by(best.c.runner_id)
    ).all()
    return [(runner_id, face_id, embedding) for runner_id, face_id, embedding in rows]


def bib_face_models(uow: UnitOfWork, event_id: str, runner_id: str) -> list[str]:
    """The face models of the faces this runner's bib was read on (not a scan of the event's faces)."""
    return list(uow.session.scalars(
        select(Face.model_id).distinct().join(BibRead, BibRead.face_id == Face.id)
        .join(Runner, (BibRead.event_id == Runner.event_id) & (BibRead.number == Runner.bib))
        .where(Runner.id == runner_id, BibRead.event_id == event_id).order_by(Face.model_id)))


def bib_runners_of_photo(uow: UnitOfWork, event_id: str, photo_id: str) -> list[str]:
    """Selfie-less runners whose bib was read on a face of this photo (their link may have moved)."""
    return list(uow.session.scalars(
        select(Runner.id).join(BibRead, (BibRead.event_id == Runner.event_id) & (BibRead.number == Runner.bib))
        .where(BibRead.photo_id == photo_id, BibRead.face_id.is_not(None), Runner.event_id == event_id,
               Runner.embedding.is_(None)).distinct()
    ))


def photos_with_bib(uow: UnitOfWork, event_id: str, number: str | None) -> list[str]:
    if not number:
        return []
    return list(uow.session.scalars(
        select(BibRead.photo_id).where(BibRead.event_id == event_id, BibRead.number == number).distinct()
    ))
