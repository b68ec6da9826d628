"""Signed, unguessable links for runners: their gallery, deleting their data, unsubscribing.

A token is the runner id and the time it was signed, signed with HMAC-SHA256 under
FINISHLINE_SECRET_KEY and salted per purpose, so a gallery link can never be replayed as a delete
link. Keys rotate: the first key signs, every listed key verifies. Delete links expire after
DELETE_LINK_DAYS (the gallery page always offers a fresh one); gallery and unsubscribe links live
as long as the event's retention (`max_age` from the caller), see app/services/gallery.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from app.errors import NotFound

Purpose = Literal["gallery", "delete", "unsubscribe"]
DELETE_LINK_DAYS = 30
LIFETIMES: dict[str, timedelta] = {"delete": timedelta(days=DELETE_LINK_DAYS)}
DAY = 86400


class _DaySigner(TimestampSigner):
    """Signs with the day, not the second: a runner's gallery link is the same string all day
    (API.md: enrolling again keeps the same gallery link), and still expires with the event's
    retention, give or take that day."""

    def get_timestamp(self) -> int:
        return super().get_timestamp() // DAY * DAY


def _serializer(keys: str | Sequence[str], purpose: Purpose) -> URLSafeTimedSerializer:
    keys = [keys] if isinstance(keys, str) else list(keys)
    # itsdangerous signs with the *last* key and tries all; our list is newest first.
    signer = TimestampSigner if purpose == "delete" else _DaySigner
    return URLSafeTimedSerializer(keys[::-1], salt=f"finishline-{purpose}", signer=signer,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def make_token(keys: str | Sequence[str], purpose: Purpose, runner_id: str) -> str:
    return _serializer(keys, purpose).dumps(runner_id)


def read_token(keys: str | Sequence[str], purpose: Purpose, token: str, *,
               max_age: timedelta | None = None) -> str:
    """The runner id inside `token`; NotFound (never a hint why) for anything forged, garbled or
    older than `max_age` (default: the purpose's lifetime, none for gallery and unsubscribe)."""
    max_age = max_age or LIFETIMES.get(purpose)
    try:
        runner_id = _serializer(keys, purpose).loads(
            token, max_age=max_age.total_seconds() if max_age else None)
    except BadSignature as exc:  # SignatureExpired is one
        raise NotFound("This link is not valid.", code="invalid_link") from exc
    if not isinstance(runner_id, str):
        raise NotFound("This link is not valid.", code="invalid_link")
    return runner_id
