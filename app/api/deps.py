"""Request dependencies: settings, photo store, unit of work, the caller (from the API key)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import Caller
from app.config import Settings
from app.db.session import UnitOfWork, unit_of_work
from app.services import api_keys
from app.storage import PhotoStore

bearer = HTTPBearer(auto_error=False, description="An API key from `finishline create-key` or `POST /api/v1/keys`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> PhotoStore:
    return request.app.state.store


def get_uow_factory(request: Request) -> Callable[[], AbstractContextManager[UnitOfWork]]:
    state = request.app.state
    return lambda: unit_of_work(state.make_session, state.sender)


def get_uow(request: Request) -> Iterator[UnitOfWork]:
    # scope="function" below: commit before the response is sent, so a client that reads
    # right after a 201 sees the row, and a failed commit is reported instead of hidden.
    # It holds a pool connection from its first query to the end of the route: routes that read
    # an upload body or run a network take UowFactory instead and open short ones.
    with get_uow_factory(request)() as uow:
        yield uow


UoW = Annotated[UnitOfWork, Depends(get_uow, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[PhotoStore, Depends(get_store)]
UowFactory = Annotated[Callable[[], AbstractContextManager[UnitOfWork]], Depends(get_uow_factory)]


def require_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    """The caller of every /api/v1 route: 401 for a missing, unknown or revoked key.

    Its own short transaction, not the request's: the connection is back in the pool before the
    route reads an upload body or runs a network (minutes, for a 2 GB upload). The Caller is a
    plain value, so nothing of that session is used afterwards.
    """
    with get_uow_factory(request)() as uow:
        return Caller.for_key(api_keys.authenticate(uow, credentials.credentials if credentials else None))


CallerDep = Annotated[Caller, Depends(require_caller)]
