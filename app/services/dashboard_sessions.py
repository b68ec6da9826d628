"""Dashboard sign-in sessions: a row per signed-in browser, a signed cookie that names it.

The cookie holds the session id and a random secret, signed with FINISHLINE_SECRET_KEY; the row
keeps only the secret's SHA-256. Signing out (or an expiry) deletes the row, so a stolen copy of
the cookie stops working then too, which a stateless signed cookie could not promise.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete

from app.db import DashboardSession, User, utcnow
from app.db.session import UnitOfWork

SESSION_LIFETIME = timedelta(hours=12)


def _serializer(signing_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(signing_key, salt="finishline-dashboard-session")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def start_session(uow: UnitOfWork, signing_key: str, user: User) -> str:
    """A new session for `user`; returns the cookie value."""
    secret = secrets.token_urlsafe(32)
    row = DashboardSession(user_id=user.id, secret_hash=_hash(secret), expires_at=utcnow() + SESSION_LIFETIME)
    uow.session.add(row)
    uow.session.flush()
    # expired rows of this user go now: the table stays the size of who is signed in
    uow.session.execute(delete(DashboardSession).where(DashboardSession.user_id == user.id,
                                                       DashboardSession.expires_at < utcnow()))
    return _serializer(signing_key).dumps([row.id, secret])


def _find(uow: UnitOfWork, signing_key: str, cookie: str | None) -> DashboardSession | None:
    if not cookie:
        return None
    try:
        session_id, secret = _serializer(signing_key).loads(cookie)
    except (BadSignature, ValueError, TypeError):
        return None
    row = uow.session.get(DashboardSession, str(session_id))
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(str(secret))):
        return None
    if row.expires_at < utcnow():
        return None
    return row


def session_user(uow: UnitOfWork, signing_key: str, cookie: str | None) -> tuple[str, User] | None:
    """(session id, user) for a valid cookie, else None."""
    row = _find(uow, signing_key, cookie)
    if row is None:
        return None
    user = uow.session.get(User, row.user_id)
    return (row.id, user) if user is not None else None


def end_session(uow: UnitOfWork, signing_key: str, cookie: str | None) -> None:
    row = _find(uow, signing_key, cookie)
    if row is not None:
        uow.session.delete(row)
