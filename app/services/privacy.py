"""Biometric data: what is kept, for how long, and what erasure leaves behind (GDPR Art. 9).

- Erasure (`exclude_faces_of`): when a runner erases their data, every face of theirs in the
  photos they matched is marked `excluded_at` and its template is deleted, so no recompute can
  hand their photos to the next most similar runner. The mark is a timestamp, not a template.
- Retention (`purge_expired_events`, run by the sweeper): `retention_days` after the event date
  (or its creation when it has none), every face and runner template of the event and the
  similarities of its matches are deleted. The matches themselves stay, so galleries keep
  working until the organiser deletes the event; nothing is matched any more after that.
- Consent (`consent_record`): the version of the consent text the runner saw and where they
  agreed (our page, or a partner site's API key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
from sqlalchemy import ColumnElement, and_, delete, select, update

from app.db import Event, Face, Match, MatchRejection, Runner, utcnow
from app.db.session import UnitOfWork

# Bump when the consent text in app/pages/templates/selfie.html changes; runners keep the version
# they agreed to.
CONSENT_VERSION = "2026-12-01"
DEFAULT_RETENTION_DAYS = 90


def matchable_faces() -> ColumnElement[bool]:
    """The faces matching may use: not excluded by an erasure, template not purged."""
    return and_(Face.excluded_at.is_(None), Face.embedding.is_not(None))


def exclude_faces_of(uow: UnitOfWork, runner: Runner, threshold: float) -> int:
    """Before erasing `runner`: mark their faces so no one inherits them; returns how many.

    Their faces are the ones in the photos they matched that are at least `threshold` similar to
    them: the matched face, and any second appearance (a mirror, a screen) that lost to it.
    """
    if runner.embedding is None:
        return 0
    photo_ids = select(Match.photo_id).where(Match.runner_id == runner.id).scalar_subquery()
    rows = uow.session.execute(
        select(Face.id, Face.embedding)
        .where(Face.photo_id.in_(photo_ids), Face.model_id == runner.model_id, Face.embedding.is_not(None))
    ).all()
    vector = np.frombuffer(runner.embedding, dtype=np.float32)
    theirs = [face_id for face_id, embedding in rows
              if float(np.frombuffer(embedding, dtype=np.float32) @ vector) >= threshold]
    matched = select(Match.face_id).where(Match.runner_id == runner.id).scalar_subquery()
    result = uow.session.execute(
        update(Face).where(Face.id.in_(theirs) | Face.id.in_(matched))
        .values(excluded_at=utcnow(), embedding=None).execution_options(synchronize_session=False)
    )
    return result.rowcount
