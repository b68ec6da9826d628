from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, event, inspect, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.db.base import Base, IdMixin, utcnow
from app.db.event import Event


class Runner(IdMixin, Base):
    __tablename__ = "runners"
    __table_args__ = (
        # re-enrolment finds the runner by (event, e-mail); the search of GET /events/{id}/runners too
        Index(None, "event_id", "email"),
        Index(None, "event_id", "bib"),  # bib matching finds runners by (event, bib)
        Index(None, "event_id", "model_id"),  # the matcher loads one event's runners of one model
        Index(None, "event_id", "changed_version"),  # and then only the rows changed since
        # the sweeper's "enrolled but never matched" scan, a few rows instead of every runner
        Index("ix_runners_unmatched", "created_at",
              postgresql_where=text("matched_at IS NULL AND embedding IS NOT NULL"),
              sqlite_where=text("matched_at IS NULL AND embedding IS NOT NULL")),
    )

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))  # null: a start-list row without one
    bib: Mapped[str | None] = mapped_column(String(40))
    consent_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What the runner agreed to: the consent text's version, and where they agreed ("page": our
    # selfie form; "api": a partner site, whose key is `enrolled_by_key_id`).
    consent_version: Mapped[str | None] = mapped_column(String(40))
    consent_source: Mapped[str | None] = mapped_column(String(10))
    from_start_list: Mapped[bool] = mapped_column(Boolean, default=False)  # imported, not self-enrolled
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # None: start list, or erased by retention
    model_id: Mapped[str | None] = mapped_column(String(100))
    unsubscribed_at: Mapped[datetime | None]
    # set once the runner was matched against the event's existing faces (MATCH_RUNNER); the
    # sweeper re-sends that task for runners still unmatched, e.g. after a lost message
    matched_at: Mapped[datetime | None]
    # the partner key that enrolled this runner (a partner sees only its own runners); null for the
    # selfie page, an organiser key, or a key deleted since
    enrolled_by_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the event's runners_version when a column of the runner matrix last changed (stamped at
    # flush, below): a worker's cached matrix reads only the rows changed since (matching.RunnerCache)
    changed_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


MATRIX_COLUMNS = ("embedding", "model_id", "bib")  # what the runner matrix is built from (bib: linked faces)


@event.listens_for(Session, "before_flush")
def _stamp_changed_runners(session: Session, _context: object, _instances: object) -> None:
    """Every ORM write of a new runner, or of a matrix column, records the event's current
    runners_version, so no service can forget to (rows written in raw SQL must set it themselves)."""
    changed = [obj for obj in session.new if isinstance(obj, Runner)]
    changed += [obj for obj in session.dirty if isinstance(obj, Runner)
                and any(inspect(obj).attrs[name].history.has_changes() for name in MATRIX_COLUMNS)]
    if not changed:
        return
    with session.no_autoflush:
        versions = dict(session.execute(select(Event.id, Event.runners_version)
                                        .where(Event.id.in_({r.event_id for r in changed}))).all())
    for runner in changed:
        runner.changed_version = versions.get(runner.event_id, 0)
