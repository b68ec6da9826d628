"""The organisation's API keys: create (the secret shown once), list, revoke. Organisers only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import CallerDep, UoW
from app.api.openapi import api_errors
from app.db import ApiKey
from app.schemas.key import KeyCreate, KeyCreated, KeyOut, KeyPage
from app.services import access, api_keys

router = APIRouter(tags=["keys"])


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(id=key.id, name=key.name, scope=key.scope, event_ids=list(key.event_ids or []),
                  created_at=key.created_at, revoked_at=key.revoked_at)


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create an API key",
             responses=api_errors("malformed_body", "validation_error", "invalid_scope", "unknown_event",
                                  "payload_too_large"))
def create_key(body: KeyCreate, uow: UoW, caller: CallerDep) -> KeyCreated:
    """A new key of the caller's organisation; `key` is in this answer only."""
    access.require_organiser(caller)
    new = api_keys.issue_key(uow, organisation_id=caller.organisation_id, name=body.name, scope=body.scope,
                             event_ids=body.event_ids)
    return KeyCreated(**key_out(new.row).model_dump(), key=new.key)


@router.get("/keys", response_model=KeyPage, summary="List the organisation's API keys",
            responses=api_errors("validation_error", "invalid_cursor"))
def list_keys(uow: UoW, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=500)] = 100,
              cursor: str | None = None) -> KeyPage:
    """The organisation's keys, newest first, revoked ones too; never their secrets."""
    access.require_organiser(caller)
    keys, next_cursor = api_keys.page_keys(uow, access.readable_keys(caller), limit=limit, cursor=cursor)
    return KeyPage(items=[key_out(k) for k in keys], next_cursor=next_cursor)


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke an API key", responses=api_errors("key_not_found"))
def revoke_key(key_id: str, uow: UoW, caller: CallerDep) -> Response:
    """The key answers 401 from now on."""
    api_keys.revoke(access.get_key(uow, caller, key_id))
    return Response(status_code=204)
