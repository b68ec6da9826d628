"""Biometric data: what is kept, for how long, and what erasure leaves behind (GDPR Art. 9).

- Erasure (`exclude_faces_of`): when a runner erases their data, every face of theirs in the
  photos they matched is marked `excluded_at` and its template is deleted, so no recompute can
  hand their photos to the next most similar runner. The mark is a timestamp, not a template.
- Retention (`purge_expired_events`, run by the sweeper): `retention_days` after the event date
  (or its creation when it has none), every face and runner template of the event and the
  similarities of its matches are deleted. The matches themselves stay, so galleries keep
  working until the organiser deletes the event; nothing is matched any more after that.
- Consent (`Consent`): the version of the consent text the runner saw and where they
  agreed (our page, or a partner site's API key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy import ColumnElement, and_, delete, select, tuple_, update

from app.db import BibRead, Delivery, Event, Face, Match, MatchRejection, Runner, utcnow
from app.db.session import UnitOfWork
from app.errors import Conflict

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


# --- retention ---------------------------------------------------------------------------------

def biometrics_expire_at(event: Event) -> datetime:
    """When the event's templates are purged: `retention_days` after its date (or creation)."""
    base = event.starts_on or event.created_at.astimezone(timezone.utc).date()
    return datetime.combine(base + timedelta(days=event.retention_days), time.min, tzinfo=timezone.utc)


def check_enrolment_open(event: Event, now: datetime | None = None) -> None:
    """Enrolling after the retention period would store a template with nothing to match."""
    if event.biometrics_purged_at is not None or biometrics_expire_at(event) <= (now or utcnow()):
        raise Conflict("This event's photos are no longer searched by face: its retention period has ended.",
                       code="retention_ended")


def purge_expired_events(uow: UnitOfWork, now: datetime | None = None) -> list[str]:
    """The sweeper's retention step: purge every event past its retention; returns their ids."""
    now = now or utcnow()
    pending = uow.session.scalars(select(Event).where(Event.biometrics_purged_at.is_(None))).all()
    expired = [event for event in pending if biometrics_expire_at(event) <= now]
    for event in expired:
        purge_event(uow, event.id, now)
    return [event.id for event in expired]


def purge_event(uow: UnitOfWork, event_id: str, now: datetime) -> None:
    """Delete the event's face and runner templates and its matches' similarities.

    Marking the event first takes its row lock, the one matching writers take (matching.lock_event),
    so a photo being matched right now either finishes before or sees the purge.
    Bib links go too: a read keeps its number and box (bib search still works) but no longer
    says whose face it was read under.
    """
    session = uow.session
    for statement in (
        # the bump drops every worker's cached runner matrix of the event (matching.RunnerCache)
        update(Event).where(Event.id == event_id).values(biometrics_purged_at=now,
                                                         runners_version=Event.runners_version + 1),
        update(Face).where(Face.event_id == event_id, Face.embedding.is_not(None)).values(embedding=None),
        update(Runner).where(Runner.event_id == event_id, Runner.embedding.is_not(None)).values(embedding=None),
        update(Match).where(Match.event_id == event_id).values(similarity=None),
        update(BibRead).where(BibRead.event_id == event_id, BibRead.face_id.is_not(None)).values(face_id=None),
    ):
        session.execute(statement.execution_options(synchronize_session=False))
    session.expire_all()


def keep_stored_matches(uow: UnitOfWork, photo_ids: list[str]) -> None:
    """What a recompute does once the event is purged: the stored matches stand, except those a
    runner rejected ("not me"); a photo processed late loses its new templates at once."""
    session = uow.session
    rejected = select(MatchRejection.runner_id, MatchRejection.photo_id).where(
        MatchRejection.photo_id.in_(photo_ids))
    session.execute(delete(Match).where(Match.photo_id.in_(photo_ids),
                                        tuple_(Match.runner_id, Match.photo_id).in_(rejected))
                    .execution_options(synchronize_session=False))
    session.execute(update(Face).where(Face.photo_id.in_(photo_ids), Face.embedding.is_not(None))
                    .values(embedding=None).execution_options(synchronize_session=False))


# --- erasure leftovers and consent -------------------------------------------------------------

def forget_outbox(uow: UnitOfWork, runner_id: str, outbox_dir: Path | None) -> None:
    """Once the erasure is committed, delete the runner's e-mails in the outbox folder (no SMTP
    server configured): they hold the name, address and thumbnails."""
    if outbox_dir is None:
        return
    files = [outbox_dir / f"{delivery_id}.eml" for delivery_id in
             uow.session.scalars(select(Delivery.id).where(Delivery.runner_id == runner_id))]
    uow.after_commit(lambda: [path.unlink(missing_ok=True) for path in files])


ConsentSource = Literal["page", "api"]


@dataclass(frozen=True)
class Consent:
    """How the runner agreed: on our page (to CONSENT_VERSION) or on a partner site through a key."""

    source: ConsentSource
    version: str | None
    key_id: str | None = None

    @classmethod
    def on_page(cls, shown_version: str | None) -> Consent:
        # the version the page showed, sent back with the form; an unknown one means the current text
        return cls("page", shown_version if shown_version in KNOWN_CONSENT_VERSIONS else CONSENT_VERSION)

    @classmethod
    def through_key(cls, key_id: str, partner_version: str | None) -> Consent:
        return cls("api", partner_version, key_id)


KNOWN_CONSENT_VERSIONS = {CONSENT_VERSION}
