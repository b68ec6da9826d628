"""API keys: `fl_<id>_<secret>`; only SHA-256(secret) is stored, compared in constant time.

A key belongs to one organisation and has a scope (app/auth.py). Creating, listing and
revoking keys is the organiser's (routes check the caller; the CLI is the operator).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, func, select

from app.auth import SCOPES, Scope
from app.db import ApiKey, Event, utcnow
from app.db.session import UnitOfWork
from app.errors import Unauthorized, Unprocessable
from app.services import organisations
from app.services.pagination import keyset_page

PREFIX = "fl_"


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    key: str  # the full secret key, shown once


def _hash(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(uow: UnitOfWork, *, organisation_id: str, name: str, scope: Scope = "organiser",
              event_ids: Iterable[str] = ()) -> NewKey:
    """A new key of the organisation; `event_ids` (partner keys) must be its events."""
    if scope not in SCOPES:
        raise Unprocessable(f"scope must be one of {', '.join(SCOPES)}.", code="invalid_scope")
    event_ids = sorted(set(event_ids))
    if event_ids and scope != "partner":
        raise Unprocessable("Only partner keys are limited to events.", code="invalid_scope")
    found = uow.session.scalar(select(func.count()).select_from(Event).where(
        Event.id.in_(event_ids), Event.organisation_id == organisation_id)) if event_ids else 0
    if found != len(event_ids):
        raise Unprocessable("event_ids must be events of this organisation.", code="unknown_event")
    secret = secrets.token_urlsafe(32)
    row = ApiKey(organisation_id=organisation_id, name=name, scope=scope, event_ids=event_ids,
                 secret_hash=_hash(secret))
    uow.session.add(row)
    uow.session.flush()
    return NewKey(row, f"{PREFIX}{row.id}_{secret}")


def create_key(uow: UnitOfWork, *, name: str, organisation_id: str | None = None,
               scope: Scope = "organiser", event_ids: Iterable[str] = ()) -> str:
    """The key string only; with no organisation, a new one named `name` (`finishline create-key NAME`)."""
    if organisation_id is None:
        organisation_id = organisations.create_organisation(uow, name=name).id
    return issue_key(uow, organisation_id=organisation_id, name=name, scope=scope, event_ids=event_ids).key


def list_keys(uow: UnitOfWork, organisation_id: str | None = None) -> list[ApiKey]:
    """Keys newest first, revoked ones too (the CLI shows every organisation's when none is given)."""
    query = select(ApiKey).order_by(ApiKey.id.desc())
    if organisation_id is not None:
        query = query.where(ApiKey.organisation_id == organisation_id)
    return list(uow.session.scalars(query))


def page_keys(uow: UnitOfWork, readable: Select, *, limit: int, cursor: str | None) -> tuple[list[ApiKey], str | None]:
    """A page of `readable` (access.readable_keys), newest first."""
    return keyset_page(uow, readable, [(ApiKey.id, True)], limit=limit, cursor=cursor, sort_key=lambda k: [k.id])


def revoke(key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()


def authenticate(uow: UnitOfWork, presented: str | None) -> ApiKey:
    if not presented or not presented.startswith(PREFIX) or presented.count("_") < 2:
        raise Unauthorized("A valid API key is required: Authorization: Bearer <key>.")
    key_id, _, secret = presented.removeprefix(PREFIX).partition("_")
    key = uow.session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
    # Compare against a dummy hash for unknown ids too, so timing does not reveal which ids exist.
    expected = key.secret_hash if key else _hash("unknown-key")
    if not hmac.compare_digest(expected, _hash(secret)) or key is None:
        raise Unauthorized("A valid API key is required: Authorization: Bearer <key>.")
    return key
