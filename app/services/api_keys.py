"""Organiser API keys: `fl_<id>_<secret>`; only SHA-256(secret) is stored, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from app.db import ApiKey
from app.db.session import UnitOfWork
from app.errors import Unauthorized

PREFIX = "fl_"


def _hash(secret: str) -> str:
    # The secret is 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(uow: UnitOfWork, *, name: str) -> str:
    secret = secrets.token_urlsafe(32)
    key = ApiKey(name=name, secret_hash=_hash(secret))
    uow.session.add(key)
    uow.session.flush()
    return f"{PREFIX}{key.id}_{secret}"


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
