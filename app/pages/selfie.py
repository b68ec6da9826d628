"""The selfie form of an event, `/e/{slug}`: enrolment without an API key.

The POST re-renders the form with the reason in words and what was typed (a browser never
refills a file input), or shows a confirmation. Same service and error codes as the API; after
`multiple_faces` the form asks which face (field `face`, as in the API) and for the selfie again.
"""

from __future__ import annotations

import base64
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.api.deps import SettingsDep, UoW, UowFactory
from app.db import Event
from app.errors import AppError, NotFound, TooManyRequests
from app.face_backend import load_face_backend
from app.pages.templating import message, page
from app.ratelimit import limit_public_form
from app.schemas.runner import RunnerCreate
from app.services import events as event_service
from app.services import runners as runner_service
from app.services.privacy import CONSENT_VERSION, Consent, check_enrolment_open
from models.image import decode_image, render_jpeg
from models.pipeline import FaceResult

router = APIRouter(include_in_schema=False)
FIELD_NAMES = {"name": "your name", "email": "your e-mail address", "bib": "the bib number"}


@router.get("/e/{slug}", response_class=HTMLResponse)
def selfie_form(slug: str, uow: UoW) -> HTMLResponse:
    try:
        event = event_service.get_event_by_slug(uow, slug)
    except NotFound:
        return message("Event not found", "There is no event at this address.", 404)
    return page("selfie.html", event=event, values={}, error=None, consent_version=CONSENT_VERSION)


@router.post("/e/{slug}", response_class=HTMLResponse)
async def submit_selfie(slug: str, request: Request, open_uow: UowFactory, settings: SettingsDep) -> HTMLResponse:
    # Short transactions only: none stays open while the selfie arrives or the CNN runs.
    try:
        event = await run_in_threadpool(_event_by_slug, open_uow, slug)
    except NotFound:
        return message("Event not found", "There is no event at this address.", 404)
    try:
        limit_public_form(request, scope=event.id)  # before the body is read: a refusal costs no upload
    except TooManyRequests as exc:
        response = page("selfie.html", 429, event=event, values={}, consent_version=CONSENT_VERSION,
                        error=f"Too many attempts from your address. Please try again in {exc.retry_after} s.")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    form = await request.form(max_files=1, max_fields=10)
    values = {key: str(form.get(key) or "") for key in ("name", "email", "bib", "consent_version")}
    values["consent"] = bool(form.get("consent"))
    values["face"] = str(form.get("face") or "")
    selfie = form.get("selfie")
    data = b""
    try:
        fields = _parse_fields(values)
        runner_service.require_consent(fields)
        check_enrolment_open(event)  # before the selfie is analysed
        data = (await run_in_threadpool(runner_service.read_selfie, selfie.file, settings.max_file_bytes)
                if isinstance(selfie, UploadFile) else b"")
        backend = await run_in_threadpool(load_face_backend, settings)
        face = await run_in_threadpool(partial(runner_service.analyse_selfie, data, backend, settings,
                                               face_index=fields.face))
        consent = Consent.on_page(fields.consent_version)
        enrolment = await run_in_threadpool(_enrol, open_uow, event.id, fields, face, backend.model_id, consent)
    except AppError as exc:
        faces = exc.extra.get("faces")
        if faces:
            faces = await run_in_threadpool(_with_previews, data, faces, settings.max_image_pixels)
        return page("selfie.html", exc.status, event=event, values=values, error=exc.detail, faces=faces,
                    consent_version=CONSENT_VERSION)
    finally:
        await form.close()
    return page("enrolled.html", event=event, runner=enrolment.runner, updated=not enrolment.created)


def _event_by_slug(open_uow: UowFactory, slug: str) -> Event:
    with open_uow() as uow:
        return event_service.get_event_by_slug(uow, slug)


def _enrol(open_uow: UowFactory, event_id: str, fields: RunnerCreate, face: FaceResult,
           model_id: str, consent: Consent) -> runner_service.Enrolment:
    with open_uow() as uow:
        return runner_service.enrol(uow, event_id, fields, face, model_id, consent)


def _with_previews(selfie: bytes, faces: list[dict], max_pixels: int) -> list[dict]:
    """Each face cut from the selfie as a small data: image, so the runner sees which is which.
    It goes back to the person who sent it, in this answer only: nothing is stored."""
    image = decode_image(selfie, max_pixels=max_pixels)
    out = []
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        margin = 0.25 * max(x2 - x1, y2 - y1)
        crop = image.crop((max(0, int(x1 - margin)), max(0, int(y1 - margin)),
                           min(image.width, int(x2 + margin)), min(image.height, int(y2 + margin))))
        preview = base64.b64encode(render_jpeg(crop, 160, quality=80)).decode()
        out.append({**face, "preview": f"data:image/jpeg;base64,{preview}"})
    return out


def _parse_fields(values: dict) -> RunnerCreate:
    try:
        return RunnerCreate(**values)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        raise AppError(f"Please check {FIELD_NAMES.get(field, field)}.", code="validation_error") from exc
