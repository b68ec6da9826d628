"""Runners: enrolment with a selfie (again: an update), lookup, listing, their matches, erasing their data.

Selfie retention: the selfie is decoded and analysed in memory during the enrolment request and
never written to storage; only its embedding and the model id are kept on the runner. A runner
enrolled under another face model must therefore enrol again (their vectors are never compared).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from sqlalchemy import delete, func, or_, select

from app.config import Settings
from app.db import Match, Runner, utcnow
from app.db.session import UnitOfWork
from app.errors import NotFound, PayloadTooLarge, Unprocessable
from app.services.pagination import keyset_page
from app.schemas.runner import RunnerCreate
from app.services import events as event_service
from app.services import matching, privacy, start_list
from app.storage import PhotoStore
from models.image import ImageDecodeError, decode_image
from models.pipeline import FaceResult, analyse_images
from models.types import FaceBackend
from app.jobs import MATCH_RUNNER

# SFace embeds a 112 px aligned crop; a face much smaller than that has lost the detail that
# tells similar people apart, and a runner can always take a closer selfie.
SELFIE_MIN_FACE_PX = 40
# A second face at least this fraction of the main face's size means we cannot tell who enrols;
# a smaller one is a bystander in the background.
SIMILAR_FACE_RATIO = 0.6

SELFIE_PROBLEMS = {
    "consent_required": "Please tick the box to agree that we use your selfie to find you in the photos.",
    "not_an_image": "That file is not a photo we can read. Please upload a JPEG or PNG picture of your face.",
    "no_face": "We could not find a face in that photo. Please upload a clear photo of your face.",
    "multiple_faces": "There is more than one face in that photo. Please upload a photo of just you, "
                      "or choose which face is yours.",
    "invalid_face": "That face choice does not match this photo. Please choose one of the faces shown.",
    "face_too_small": "Your face is too small in that photo. Please upload a closer photo of your face.",
    "image_too_large": "That photo is too large. Please upload a smaller picture.",
}


def read_selfie(stream: BinaryIO, max_bytes: int) -> bytes:
    """The selfie's bytes, reading one byte past the limit to know it was exceeded (413)."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(SELFIE_PROBLEMS["image_too_large"], code="image_too_large")
    return data


def candidate_faces(faces: list[FaceResult]) -> list[FaceResult]:
    """The faces that could be the one enrolling: the largest and any of similar size, left to
    right (so an index means the same face when the same selfie is sent again)."""
    if not faces:
        return []
    largest = max(f.face_px for f in faces)
    return sorted((f for f in faces if f.face_px >= SIMILAR_FACE_RATIO * largest), key=lambda f: (f.box[0], f.box[1]))


def choose_face(faces: list[FaceResult], face_index: int | None = None) -> FaceResult:
    """The selfie's face (the runner's choice among similar ones), or the reason there is none.

    Several faces of similar size without a choice: `multiple_faces`, listing them with their
    index and box, so the runner can send the same selfie again with `face` = the index.
    """
    candidates = candidate_faces(faces)
    if not candidates:
        raise Unprocessable(SELFIE_PROBLEMS["no_face"], code="no_face")
    if face_index is not None:
        if not 0 <= face_index < len(candidates):
            raise Unprocessable(SELFIE_PROBLEMS["invalid_face"], code="invalid_face",
                                extra={"faces": faces_listing(candidates)})
        face = candidates[face_index]
    elif len(candidates) > 1:
        raise Unprocessable(SELFIE_PROBLEMS["multiple_faces"], code="multiple_faces",
                            extra={"faces": faces_listing(candidates)})
    else:
        face = candidates[0]
    if face.face_px < SELFIE_MIN_FACE_PX:
        raise Unprocessable(SELFIE_PROBLEMS["face_too_small"], code="face_too_small")
    return face


def require_consent(form: RunnerCreate) -> None:
    if not form.consent:
        raise Unprocessable(SELFIE_PROBLEMS["consent_required"], code="consent_required")


def faces_listing(candidates: list[FaceResult]) -> list[dict]:
    return [{"index": i, "box": [round(float(v), 1) for v in f.box]} for i, f in enumerate(candidates)]


def analyse_selfie(data: bytes, backend: FaceBackend, settings: Settings, *,
                   face_index: int | None = None) -> FaceResult:
    """The selfie's face, in memory. Needs no database: run it outside any transaction."""
    try:
        image = decode_image(data, max_pixels=settings.max_image_pixels)
    except ImageDecodeError as exc:
        if exc.code == "image_too_large":
            raise PayloadTooLarge(SELFIE_PROBLEMS["image_too_large"], code="image_too_large") from exc
        raise Unprocessable(SELFIE_PROBLEMS["not_an_image"], code="not_an_image") from exc
    # Detect small faces too (min 8 px), so a distant face reads "too small", not "no face".
    faces = analyse_images([image], backend, detect_long_side=settings.detect_long_side, min_face_px=8)[0]
    return choose_face(faces, face_index)


@dataclass(frozen=True)
class Enrolment:
    runner: Runner
    created: bool  # False: the e-mail was already enrolled in this event and that runner was updated


def find_by_email(uow: UnitOfWork, event_id: str, email: str) -> Runner | None:
    return uow.session.scalar(
        select(Runner).where(Runner.event_id == event_id, func.lower(Runner.email) == email.lower())
        .order_by(Runner.id).limit(1))


def enrol(uow: UnitOfWork, event_id: str, form: RunnerCreate, face: FaceResult, model_id: str,
          consent: privacy.Consent) -> Enrolment:
    """A runner from their analysed selfie; matching against the event's photos is queued.

    The selfie is analysed before this unit of work opens (`analyse_selfie`): a request holds no
    transaction, and no pool connection, while a network runs.

    The same e-mail again in the same event updates that runner (issue 9, review C9): same id and
    gallery link, the new template, `matching` pending again and its matches recomputed by
    MATCH_RUNNER; photos already e-mailed stay delivered (DeliveredPhoto is per runner), so none
    is e-mailed twice. Serialised by the event lock, so two racing submissions make one runner.
    """
    require_consent(form)
    privacy.check_enrolment_open(event_service.get_event(uow, event_id))
    matching.runners_changed(uow, event_id)  # locks the event; workers reload its runners (matching.py)
    # the same e-mail re-enrols; a start-list runner without an e-mail is completed by their bib
    runner = find_by_email(uow, event_id, str(form.email)) or start_list.claim_for_selfie(uow, event_id, bib=form.bib)
    created = runner is None
    if runner is None:
        runner = Runner(event_id=event_id)
        uow.session.add(runner)
    runner.name, runner.email, runner.bib = form.name, str(form.email), form.bib or runner.bib
    # what they agreed to, and where: the key that enrolled them is the one that asserted consent
    runner.consent_at, runner.consent_version, runner.consent_source = utcnow(), consent.version, consent.source
    runner.embedding, runner.model_id = face.embedding.astype("float32").tobytes(), model_id
    runner.matched_at = None  # pending until MATCH_RUNNER has seen every face of the event
    runner.enrolled_by_key_id = consent.key_id
    uow.session.flush()
    uow.send_task(MATCH_RUNNER, runner.id)
    return Enrolment(runner, created)


def matching_state(runner: Runner) -> Literal["pending", "done"]:
    return "done" if runner.matched_at is not None else "pending"


def list_runners(uow: UnitOfWork, event_id: str, *, q: str | None, limit: int,
                 cursor: str | None) -> tuple[list[Runner], str | None]:
    """The event's runners, newest first; `q` finds a part of the name or e-mail, or the bib."""
    query = select(Runner).where(Runner.event_id == event_id)
    if q and q.strip():
        needle = q.strip().lower()
        query = query.where(or_(func.lower(Runner.name).contains(needle, autoescape=True),
                                func.lower(Runner.email).contains(needle, autoescape=True),
                                func.lower(Runner.bib) == needle))
    return keyset_page(uow, query, [(Runner.id, True)], limit=limit, cursor=cursor, sort_key=lambda r: [r.id])


def get_runner(uow: UnitOfWork, runner_id: str) -> Runner:
    runner = uow.session.get(Runner, runner_id)
    if runner is None:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")
    return runner


def match_count(uow: UnitOfWork, runner_id: str) -> int:
    return uow.session.scalar(select(func.count()).select_from(Match).where(Match.runner_id == runner_id)) or 0


def list_matches(uow: UnitOfWork, runner_id: str, *, limit: int = 1000,
                 cursor: str | None = None) -> tuple[list[Match], str | None]:
    """The runner's matches, best first, a page at a time."""
    get_runner(uow, runner_id)
    # bib-only matches have no similarity: they sort after every face match
    return keyset_page(uow, select(Match).where(Match.runner_id == runner_id),
                       [(func.coalesce(Match.similarity, -1.0), True), (Match.id, False)], limit=limit,
                       cursor=cursor, sort_key=lambda m: [-1.0 if m.similarity is None else m.similarity, m.id])


def delete_runner(uow: UnitOfWork, store: PhotoStore, runner_id: str, *, outbox_dir: Path | None = None) -> None:
    """Erase the runner: embedding, matches, rejections, deliveries, and the templates of their
    faces in the photos (which are marked excluded, so nobody else inherits them).

    The database cascades from the runner row; their photos are rematched afterwards for the
    other faces in them. A concurrent second erasure waits on the event lock, then gets NotFound.
    """
    runner = get_runner(uow, runner_id)
    event = matching.runners_changed(uow, runner.event_id)  # locks the event; workers reload its runners
    if uow.session.scalar(select(Runner.id).where(Runner.id == runner_id)) is None:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")  # erased meanwhile
    photo_ids = list(uow.session.scalars(select(Match.photo_id).where(Match.runner_id == runner_id)))
    privacy.exclude_faces_of(uow, runner, event.match_threshold)
    privacy.forget_outbox(uow, runner_id, outbox_dir)
    uow.session.execute(delete(Runner).where(Runner.id == runner_id).execution_options(synchronize_session=False))
    uow.session.expire_all()  # cascaded rows are gone in the database, not yet in the session
    matching.rematch_photos(uow, event, photo_ids)


def match_counts(uow: UnitOfWork, runner_ids: list[str]) -> dict[str, int]:
    """Photos per runner for a page of runners, in one query."""
    if not runner_ids:
        return {}
    rows = uow.session.execute(select(Match.runner_id, func.count()).where(Match.runner_id.in_(runner_ids))
                               .group_by(Match.runner_id))
    return {runner_id: 0 for runner_id in runner_ids} | dict(rows.all())
