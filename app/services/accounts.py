"""Dashboard accounts: e-mail + password, the password kept only as an argon2id hash."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from app.db import User
from app.db.session import UnitOfWork
from app.errors import Conflict, Unauthorized, Unprocessable

# argon2-cffi's defaults (RFC 9106 low-memory profile: 64 MiB, 3 passes) are the library's advice.
_hasher = PasswordHasher()
# Verified when the e-mail is unknown, so the answer takes as long as for a wrong password.
_DUMMY_HASH = _hasher.hash("no such user")
MIN_PASSWORD_LENGTH = 8
BAD_CREDENTIALS = "Wrong e-mail address or password."


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(uow: UnitOfWork, *, organisation_id: str, email: str, password: str,
                name: str | None = None) -> User:
    email = normalise_email(email)
    if "@" not in email:
        raise Unprocessable(f"{email!r} is not an e-mail address.", code="invalid_email")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(f"The password needs at least {MIN_PASSWORD_LENGTH} characters.", code="weak_password")
    if uow.session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"There is already an account for {email}.", code="user_exists")
    user = User(organisation_id=organisation_id, email=email, name=name, password_hash=_hasher.hash(password))
    uow.session.add(user)
    uow.session.flush()
    return user


def authenticate_user(uow: UnitOfWork, *, email: str, password: str) -> User:
    user = uow.session.scalar(select(User).where(User.email == normalise_email(email)))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials") from None
    if user is None:
        raise Unauthorized(BAD_CREDENTIALS, code="invalid_credentials")
    if _hasher.check_needs_rehash(user.password_hash):  # parameters raised since it was stored
        user.password_hash = _hasher.hash(password)
    return user
