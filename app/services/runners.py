"""Runners: enrolment with a selfie, lookup, their matches, and erasing their data.

Selfie retention: the selfie is decoded and analysed in memory during the enrolment request and
never written to storage; only its embedding and the model id are kept on the runner. A runner
enrolled under another face model must therefore enrol again (their vectors are never compared).
"""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy import func, select

from app.config import Settings
from app.db import Match, Runner, utcnow
from app.db.session import UnitOfWork
from app.errors import NotFound, PayloadTooLarge, Unprocessable
from app.schemas.runner import RunnerCreate
from app.services import events as event_service
from app.services import matching
from app.storage import PhotoStore
from models.image import ImageDecodeError, decode_image
from models.pipeline import FaceResult, analyse_images
from models.types import FaceBackend
from worker.dispatch import MATCH_RUNNER

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
    "multiple_faces": "There is more than one face in that photo. Please upload a photo of just you.",
    "face_too_small": "Your face is too small in that photo. Please upload a closer photo of your face.",
    "image_too_large": "That photo is too large. Please upload a smaller picture.",
}


def read_selfie(stream: BinaryIO, max_bytes: int) -> bytes:
    """The selfie's bytes, reading one byte past the limit to know it was exceeded (413)."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(SELFIE_PROBLEMS["image_too_large"], code="image_too_large")
    return data


def choose_face(faces: list[FaceResult]) -> FaceResult:
    """The selfie's dominant face, or the reason (an error with a stable code) there is none."""
    if not faces:
        raise Unprocessable(SELFIE_PROBLEMS["no_face"], code="no_face")
    faces = sorted(faces, key=lambda f: f.face_px, reverse=True)
    if len(faces) > 1 and faces[1].face_px >= SIMILAR_FACE_RATIO * faces[0].face_px:
        raise Unprocessable(SELFIE_PROBLEMS["multiple_faces"], code="multiple_faces")
    if faces[0].face_px < SELFIE_MIN_FACE_PX:
        raise Unprocessable(SELFIE_PROBLEMS["face_too_small"], code="face_too_small")
    return faces[0]


def analyse_selfie(data: bytes, backend: FaceBackend, settings: Settings) -> FaceResult:
    try:
        image = decode_image(data, max_pixels=settings.max_image_pixels)
    except ImageDecodeError as exc:
        if exc.code == "image_too_large":
            raise PayloadTooLarge(SELFIE_PROBLEMS["image_too_large"], code="image_too_large") from exc
        raise Unprocessable(SELFIE_PROBLEMS["not_an_image"], code="not_an_image") from exc
    # Detect small faces too (min 8 px), so a distant face reads "too small", not "no face".
    faces = analyse_images([image], backend, detect_long_side=settings.detect_long_side, min_face_px=8)[0]
    return choose_face(faces)


def enrol(uow: UnitOfWork, event_id: str, form: RunnerCreate, selfie: bytes,
          backend: FaceBackend, settings: Settings) -> Runner:
    """A new runner from a usable selfie; matching against the event's photos is queued."""
    if not form.consent:
        raise Unprocessable(SELFIE_PROBLEMS["consent_required"], code="consent_required")
    event_service.get_event(uow, event_id)
    face = analyse_selfie(selfie, backend, settings)
    matching.runners_changed(uow, event_id)  # workers reload the event's runners; see matching.py
    runner = Runner(event_id=event_id, name=form.name, email=str(form.email), bib=form.bib,
                    consent_at=utcnow(), embedding=face.embedding.astype("float32").tobytes(),
                    model_id=backend.model_id)
    uow.session.add(runner)
    uow.session.flush()
    uow.send_task(MATCH_RUNNER, runner.id)
    return runner


def get_runner(uow: UnitOfWork, runner_id: str) -> Runner:
    runner = uow.session.get(Runner, runner_id)
    if runner is None:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")
    return runner


def match_count(uow: UnitOfWork, runner_id: str) -> int:
    return uow.session.scalar(select(func.count()).select_from(Match).where(Match.runner_id == runner_id)) or 0


def list_matches(uow: UnitOfWork, runner_id: str) -> list[Match]:
    """The runner's matches, best first."""
    get_runner(uow, runner_id)
    return list(uow.session.scalars(
        select(Match).where(Match.runner_id == runner_id).order_by(Match.similarity.desc(), Match.id)
    ))


def delete_runner(uow: UnitOfWork, store: PhotoStore, runner_id: str) -> None:
    """Erase the runner: selfie file (if any), embedding, matches, rejections, deliveries.

    The database cascades from the runner row. Their photos are rematched afterwards, because a
    face that was theirs may now belong to the next most similar runner.
    """
    runner = get_runner(uow, runner_id)
    event = matching.runners_changed(uow, runner.event_id)
    photo_ids = list(uow.session.scalars(select(Match.photo_id).where(Match.runner_id == runner_id)))
    if runner.selfie_key:
        key = runner.selfie_key
        uow.after_commit(lambda: store.delete(key))  # only once the row is surely gone
    uow.session.delete(runner)
    uow.session.flush()
    uow.session.expire_all()  # cascaded rows are gone in the database, not yet in the session
    matching.rematch_photos(uow, event, photo_ids)
