from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.api.deps import CallerDep, SettingsDep, StoreDep, UoW
from app.config import Settings
from app.db import Runner
from app.db.session import UnitOfWork
from app.face_backend import load_face_backend
from app.schemas.runner import MatchList, MatchOut, RunnerCreate, RunnerOut
from app.services import access
from app.services import gallery as gallery_service
from app.services import runners as runner_service

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
                 uow: UoW, settings: SettingsDep, caller: CallerDep) -> RunnerOut:
    event = access.get_event(uow, caller, event_id)
    data = runner_service.read_selfie(selfie.file, settings.max_file_bytes)
    runner = runner_service.enrol(uow, event.id, form, data, load_face_backend(settings), settings,
                                  enrolled_by_key_id=caller.key_id)
    return runner_out(uow, runner, settings)


@router.get("/runners/{runner_id}", response_model=RunnerOut)
def get_runner(runner_id: str, uow: UoW, settings: SettingsDep, caller: CallerDep) -> RunnerOut:
    return runner_out(uow, access.get_runner(uow, caller, runner_id), settings)


@router.get("/runners/{runner_id}/matches", response_model=MatchList)
def list_matches(runner_id: str, uow: UoW, caller: CallerDep) -> MatchList:
    matches = runner_service.list_matches(uow, access.get_runner(uow, caller, runner_id).id)
    return MatchList(items=[MatchOut(photo_id=m.photo_id, face_id=m.face_id, similarity=m.similarity)
                            for m in matches])


@router.delete("/runners/{runner_id}", status_code=204)
def delete_runner(runner_id: str, uow: UoW, store: StoreDep, caller: CallerDep) -> Response:
    runner_service.delete_runner(uow, store, access.get_runner(uow, caller, runner_id).id)
    return Response(status_code=204)
