"""The selfie form of an event, `/e/{slug}`: enrolment without an API key.

Post/redirect/get: a successful POST answers 303 to the confirmation page, so a refresh there
never enrols twice. An error re-renders the form with the reason next to its field, what was
typed, and the selfie itself (a browser never refills a file input). The page's script sends
the same form with `Accept: application/json` and gets the same outcome as JSON. Same service
and error codes as the API. After `multiple_faces` the form shows a crop of each face found to
tap, and the same selfie goes again with the field `face`, as in the API.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.api.deps import SettingsDep, StoreDep, UoW, UowFactory
from app.db import Event
from app.errors import AppError, NotFound, TooManyRequests
from app.face_backend import load_face_backend
from app.pages import selfie_images
from app.pages.templating import event_context, message, page
from app.ratelimit import limit_public_form
from app.schemas.runner import RunnerCreate
from app.services import branding
from app.services import events as event_service
from app.services import gallery as gallery_service
from app.services import runners as runner_service
from app.services.privacy import CONSENT_VERSION, Consent, check_enrolment_open
from app.services.tokens import make_token
from models.pipeline import FaceResult

router = APIRouter(include_in_schema=False)
FIELD_NAMES = {"name": "your name", "email": "your e-mail address", "bib": "the bib number"}
# which form field an error code is about, so the message sits next to it
ERROR_FIELDS = {"consent_required": "consent", "multiple_faces": "face", "no_face": "selfie",
                "face_too_small": "selfie", "not_an_image": "selfie", "image_too_large": "selfie",
                "no_selfie": "selfie", "invalid_face": "face"}
NO_EVENT = ("Event not found", "There is no event at this address. Please check the link you were given.")


def _event(uow, slug: str) -> Event | None:
    try:
        return event_service.get_event_by_slug(uow, slug)
    except NotFound:
        return None


@router.get("/e/{slug}", response_class=HTMLResponse)
def selfie_form(slug: str, uow: UoW) -> HTMLResponse:
    event = _event(uow, slug)
    if event is None:
        return message(*NO_EVENT, status_code=404)
    return page("selfie.html", **event_context(uow, event), values={}, error=None, consent_version=CONSENT_VERSION)


@router.get("/e/{slug}/brand.css")
def brand_css(slug: str, uow: UoW) -> Response:
    event = _event(uow, slug)
    css = branding.brand_css(event) if event else ""
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})


@router.get("/e/{slug}/logo")
def logo(slug: str, uow: UoW, store: StoreDep) -> Response:
    event = _event(uow, slug)
    if event is None or not event.logo_key:
        raise NotFound("No logo.", code="logo_not_found")
    with store.open(event.logo_key) as f:
        data = f.read()
    return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=300"})


@router.post("/e/{slug}", response_class=HTMLResponse)
async def submit_selfie(slug: str, request: Request, open_uow: UowFactory, settings: SettingsDep) -> Response:
    wants_json = "application/json" in request.headers.get("accept", "")
    # Short transactions only: none stays open while the selfie arrives or the CNN runs.
    context = await run_in_threadpool(_event_context, open_uow, slug)
    if context is None:
        return message(*NO_EVENT, status_code=404)
    event = context["event"]
    try:
        limit_public_form(request, scope=event.id)  # before the body is read: a refusal costs no upload
    except TooManyRequests as exc:
        text = f"Too many attempts from your address. Please try again in {exc.retry_after} seconds."
        response = _error(context, {}, b"", exc, text, wants_json)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    # the kept selfie travels back base64-encoded in a text field, hence the larger part size
    form = await request.form(max_files=2, max_fields=12, max_part_size=8 * 2**20)
    values = {key: str(form.get(key) or "") for key in ("name", "email", "bib", "face", "consent_version")}
    values["consent"] = bool(form.get("consent"))
    data = b""
    try:
        fields = _parse_fields(values)
        data = await run_in_threadpool(_selfie_bytes, form, settings.max_file_bytes)  # kept on any error below
        runner_service.require_consent(fields)
        check_enrolment_open(event)  # before the selfie is analysed
        backend = await run_in_threadpool(load_face_backend, settings)
        face = await run_in_threadpool(partial(runner_service.analyse_selfie, data, backend, settings,
                                               face_index=fields.face))
        consent = Consent.on_page(fields.consent_version)
        enrolment = await run_in_threadpool(_enrol, open_uow, event.id, fields, face, backend.model_id, consent)
    except AppError as exc:
        return _error(context, values, data, exc, exc.detail, wants_json)
    finally:
        await form.close()
    done = f"/e/{event.slug}/done/{make_token(settings.signing_key, 'gallery', enrolment.runner.id)}"
    if not enrolment.created:
        done += "?updated=1"
    if wants_json:
        return JSONResponse({"redirect": done})
    return RedirectResponse(done, status_code=303)


@router.get("/e/{slug}/done/{token}", response_class=HTMLResponse)
def enrolled(slug: str, token: str, uow: UoW, settings: SettingsDep, updated: bool = False) -> HTMLResponse:
    event = _event(uow, slug)
    try:
        runner = gallery_service.runner_for(uow, settings, "gallery", token)
    except NotFound:
        runner = None
    if event is None or runner is None or runner.event_id != event.id:
        return message("Link not valid", "This link is not valid, or the data it pointed to has been deleted.", 404)
    return page("enrolled.html", **event_context(uow, event), runner=runner, gallery=f"/g/{token}", updated=updated)


def _event_context(open_uow: UowFactory, slug: str) -> dict | None:
    with open_uow() as uow:
        event = _event(uow, slug)
        return event_context(uow, event) if event else None


def _enrol(open_uow: UowFactory, event_id: str, fields: RunnerCreate, face: FaceResult,
           model_id: str, consent: Consent) -> runner_service.Enrolment:
    with open_uow() as uow:
        return runner_service.enrol(uow, event_id, fields, face, model_id, consent)


def _selfie_bytes(form, max_bytes: int) -> bytes:
    """The chosen file (camera or library input), else the selfie kept from the last attempt."""
    for upload in form.getlist("selfie"):
        if isinstance(upload, UploadFile) and upload.filename:
            data = runner_service.read_selfie(upload.file, max_bytes)
            if data:
                return data
    kept = form.get("selfie_kept")
    data = selfie_images.read_kept(kept) if isinstance(kept, str) else b""
    if not data:
        raise AppError("Please add a selfie: take one, or choose a photo of your face.", code="no_selfie")
    return data


def _error(context: dict, values: dict, selfie: bytes, exc: AppError, text: str, wants_json: bool) -> Response:
    faces = exc.extra.get("faces") or []
    choices = selfie_images.face_crops(selfie, faces) if faces and selfie else []
    field = ERROR_FIELDS.get(exc.code) or getattr(exc, "field", None)
    if wants_json:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"error": text, "code": exc.code, "field": field, "faces": choices},
                            status_code=exc.status, headers=headers)
    return page("selfie.html", exc.status, **context, values=values, error=text, error_field=field,
                consent_version=CONSENT_VERSION,
                kept_selfie=selfie_images.kept_selfie(selfie), faces=choices)


class FieldError(AppError):
    """A form field the schema refused; `field` says which, so the message sits beside it."""

    def __init__(self, field: str) -> None:
        super().__init__(f"Please check {FIELD_NAMES.get(field, field)}.", code="validation_error")
        self.field = field


def _parse_fields(values: dict) -> RunnerCreate:
    try:
        return RunnerCreate(**{k: v for k, v in values.items() if v != "" or k != "face"})
    except ValidationError as exc:
        raise FieldError(str(exc.errors()[0]["loc"][0])) from exc
