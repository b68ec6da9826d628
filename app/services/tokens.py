"""Signed, unguessable links for runners: their gallery, and deleting their data.

A token is the runner id signed with FINISHLINE_SECRET_KEY (HMAC-SHA256 via itsdangerous),
salted per purpose so a gallery link can never be replayed as a delete link. Runner ids are
random, and the signature makes tokens unforgeable without the key.
"""

from __future__ import annotations

from typing import Literal

from itsdangerous import BadSignature, URLSafeSerializer

from app.errors import NotFound

Purpose = Literal["gallery", "delete", "unsubscribe"]


def _serializer(secret: str, purpose: Purpose) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=f"finishline-{purpose}")


def make_token(secret: str, purpose: Purpose, runner_id: str) -> str:
    return _serializer(secret, purpose).dumps(runner_id)


def read_token(secret: str, purpose: Purpose, token: str) -> str:
    """The runner id inside `token`; NotFound (never a hint why) for anything forged or garbled."""
    try:
        runner_id = _serializer(secret, purpose).loads(token)
    except BadSignature as exc:
        raise NotFound("This link is not valid.", code="invalid_link") from exc
    if not isinstance(runner_id, str):
        raise NotFound("This link is not valid.", code="invalid_link")
    return runner_id
