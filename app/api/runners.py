from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.api.deps import ApiKeyDep, SettingsDep, StoreDep, UoW
from app.config import Settings
from app.db import Runner
from app.db.session import UnitOfWork
from app.face_backend import load_face_backend
from app.schemas.runner import (
    MatchList, MatchOut, RunnerCreate, RunnerOut, StartListOut, StartListRejectedOut,
)
from app.services import gallery as gallery_service
from app.services import runners as runner_service
from app.services import start_list

router = APIRouter(tags=["runners"])


def runner_out(uow: UnitOfWork, runner: Runner, settings: Settings) -> RunnerOut:
    return RunnerOut(
        id=runner.id, event_id=runner.event_id, name=runner.name, email=runner.email, bib=runner.bib,
        created_at=runner.created_at, matches=runner_service.match_count(uow, runner.id),
        gallery_url=gallery_service.gallery_url(settings, runner.id),
    )


# A sync route: FastAPI runs it in the thread pool, so the CNNs never block the event loop.
@router.post("/events/{event_id}/runners", status_code=201, response_model=RunnerOut)
def enrol_runner(event_id: str, form: Annotated[RunnerCreate, Form()], selfie: Annotated[UploadFile, File()],
                 uow: UoW, settings: SettingsDep, _key: ApiKeyDep) -> RunnerOut:
    data = runner_service.read_selfie(selfie.file, settings.max_file_bytes)
    runner = runner_service.enrol(uow, event_id, form, data, load_face_backend(settings), settings)
    return runner_out(uow, runner, settings)


@router.get("/runners/{runner_id}", response_model=RunnerOut)
def get_runner(runner_id: str, uow: UoW, settings: SettingsDep, _key: ApiKeyDep) -> RunnerOut:
    return runner_out(uow, runner_service.get_runner(uow, runner_id), settings)


@router.get("/runners/{runner_id}/matches", response_model=MatchList)
def list_matches(runner_id: str, uow: UoW, _key: ApiKeyDep) -> MatchList:
    matches = runner_service.list_matches(uow, runner_id)
    return MatchList(items=[MatchOut(photo_id=m.photo_id, face_id=m.face_id, similarity=m.similarity,
                                     source=m.source) for m in matches])


@router.delete("/runners/{runner_id}", status_code=204)
def delete_runner(runner_id: str, uow: UoW, store: StoreDep, _key: ApiKeyDep) -> Response:
    runner_service.delete_runner(uow, store, runner_id)
    return Response(status_code=204)


@router.post("/events/{event_id}/start-list", response_model=StartListOut)
def import_start_list(event_id: str, file: Annotated[UploadFile, File(description=(
        "CSV (UTF-8, comma or semicolon) with a header row holding `bib` and optionally `name`, `email`"))],
        uow: UoW, _key: ApiKeyDep) -> StartListOut:
    """Create or update (by bib) runners without a selfie, matched to photos by bib alone.

    Bad rows come back in `rejected` with their line; a file that cannot be read as a CSV with a
    `bib` column answers 422 and imports nothing.
    """
    data = file.file.read(start_list.MAX_BYTES + 1)
    result = start_list.import_start_list(uow, event_id, data)
    return StartListOut(created=result.created, updated=result.updated,
                        rejected=[StartListRejectedOut(**r.__dict__) for r in result.rejected])
