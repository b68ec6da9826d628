from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from app.api.deps import CallerDep, SettingsDep, StoreDep, UoW, UowFactory
from app.api.openapi import api_errors
from app.config import Settings
from app.db import Runner
from app.db.session import UnitOfWork
from app.face_backend import load_face_backend
from app.schemas.runner import (
    MatchList, MatchOut, RunnerCreate, RunnerOut, RunnerPage, StartListOut, StartListRejectedOut,
)
from app.services import access
from app.services import gallery as gallery_service
from app.services import privacy
from app.services import runners as runner_service
from app.services import start_list

router = APIRouter(tags=["runners"])


def runner_out(uow: UnitOfWork, runner: Runner, settings: Settings) -> RunnerOut:
    return RunnerOut(
        id=runner.id, event_id=runner.event_id, name=runner.name, email=runner.email, bib=runner.bib,
        created_at=runner.created_at, matches=runner_service.match_count(uow, runner.id),
        matching=runner_service.matching_state(runner),
        gallery_url=gallery_service.gallery_url(settings, runner.id),
    )


# A sync route: FastAPI runs it in the thread pool, so the CNNs never block the event loop. The
# body is read before it runs; it opens two short transactions around the CNN, never one across it.
@router.post("/events/{event_id}/runners", status_code=201, response_model=RunnerOut,
             summary="Enrol a runner with a selfie (or update the one with this e-mail)",
             responses={200: {"model": RunnerOut, "description": "this e-mail was enrolled already: runner updated"},
                        **api_errors("event_not_found", "malformed_body", "payload_too_large", "image_too_large",
                                     "validation_error", "consent_required", "not_an_image", "no_face",
                                     "multiple_faces", "invalid_face", "face_too_small", "retention_ended")})
def enrol_runner(event_id: str, form: Annotated[RunnerCreate, Form()], selfie: Annotated[UploadFile, File()],
                 open_uow: UowFactory, settings: SettingsDep, caller: CallerDep, response: Response) -> RunnerOut:
    """Enrol a runner (201), or update the runner already enrolled with this e-mail (200)."""
    runner_service.require_consent(form)
    with open_uow() as uow:
        event = access.get_event(uow, caller, event_id)  # 404 before any network work
        privacy.check_enrolment_open(event)  # 409 before the selfie is analysed
    backend = load_face_backend(settings)
    face = runner_service.analyse_selfie(runner_service.read_selfie(selfie.file, settings.max_file_bytes),
                                         backend, settings, face_index=form.face)
    consent = privacy.Consent.through_key(caller.key_id, form.consent_version)
    with open_uow() as uow:
        enrolment = runner_service.enrol(uow, event.id, form, face, backend.model_id, consent)
        if not enrolment.created:
            response.status_code = 200
        return runner_out(uow, enrolment.runner, settings)


@router.get("/events/{event_id}/runners", response_model=RunnerPage, summary="List or search an event's runners",
            responses=api_errors("event_not_found", "validation_error", "invalid_cursor"))
def list_runners(event_id: str, uow: UoW, settings: SettingsDep, caller: CallerDep,
                 q: Annotated[str | None, Query(max_length=320, description="part of the name or e-mail, or the bib")] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 100, cursor: str | None = None) -> RunnerPage:
    """The event's runners, newest first."""
    access.require_organiser(caller)
    event = access.get_event(uow, caller, event_id)
    runners, next_cursor = runner_service.list_runners(uow, event.id, q=q, limit=limit, cursor=cursor)
    return RunnerPage(items=[runner_out(uow, r, settings) for r in runners], next_cursor=next_cursor)


@router.get("/runners/{runner_id}", response_model=RunnerOut, summary="Get a runner",
            responses=api_errors("runner_not_found"))
def get_runner(runner_id: str, uow: UoW, settings: SettingsDep, caller: CallerDep) -> RunnerOut:
    return runner_out(uow, access.get_runner(uow, caller, runner_id), settings)


@router.get("/runners/{runner_id}/matches", response_model=MatchList, summary="List a runner's matched photos",
            responses=api_errors("runner_not_found", "validation_error", "invalid_cursor"))
def list_matches(runner_id: str, uow: UoW, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                 cursor: str | None = None) -> MatchList:
    """The runner's matches, best first."""
    runner = access.get_runner(uow, caller, runner_id)
    matches, next_cursor = runner_service.list_matches(uow, runner.id, limit=limit, cursor=cursor)
    return MatchList(items=[MatchOut(photo_id=m.photo_id, face_id=m.face_id, similarity=m.similarity,
                                     source=m.source) for m in matches], next_cursor=next_cursor)


@router.delete("/runners/{runner_id}", status_code=204, summary="Delete a runner and all their data",
               responses=api_errors("runner_not_found"))
def delete_runner(runner_id: str, uow: UoW, store: StoreDep, settings: SettingsDep, caller: CallerDep) -> Response:
    runner_service.delete_runner(uow, store, access.get_runner(uow, caller, runner_id).id,
                                 outbox_dir=settings.outbox_dir)
    return Response(status_code=204)


@router.post("/events/{event_id}/start-list", response_model=StartListOut,
             summary="Import a start list: runners by bib, without a selfie",
             responses=api_errors("event_not_found", "malformed_body", "validation_error", "malformed_csv",
                                  "missing_bib_column", "file_too_large", "too_many_rows"))
def import_start_list(event_id: str, file: Annotated[UploadFile, File(description=(
        "CSV (UTF-8, comma or semicolon) with a header row holding `bib` and optionally `name`, `email`"))],
        uow: UoW, caller: CallerDep) -> StartListOut:
    """Create or update (by bib) runners without a selfie, matched to photos by bib alone.

    Bad rows come back in `rejected` with their line; a file that cannot be read as a CSV with a
    `bib` column answers 422 and imports nothing.
    """
    access.require_organiser(caller)
    event = access.get_event(uow, caller, event_id)
    data = file.file.read(start_list.MAX_BYTES + 1)
    result = start_list.import_start_list(uow, event.id, data)
    return StartListOut(created=result.created, updated=result.updated,
                        rejected=[StartListRejectedOut(**r.__dict__) for r in result.rejected])
