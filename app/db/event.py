from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class Event(IdMixin, Base):
    __tablename__ = "events"
    __table_args__ = (Index(None, "organisation_id", "id"),)  # GET /events: newest first per organisation

    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    starts_on: Mapped[date | None] = mapped_column(Date)
    match_threshold: Mapped[float] = mapped_column(Float)
    # Biometric templates (faces, runners, bib links) and similarities are purged this many days
    # after the event date (or its creation); matches and galleries stay (app/services/privacy.py).
    retention_days: Mapped[int] = mapped_column(Integer, default=90, server_default="90")
    biometrics_purged_at: Mapped[datetime | None]
    # runners may find photos by bib number on the event's public page (off: some organisers
    # will not let anyone who knows a number see that runner's photos)
    bib_search_public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The newest photo id when `event.processed` was last emitted: it is emitted again only once
    # newer photos have all finished (app/services/webhooks.py).
    processed_through: Mapped[str | None] = mapped_column(String(32))
    # What the runner pages show (dashboard settings); empty means the neutral defaults.
    brand_colour: Mapped[str | None] = mapped_column(String(7))  # "#rrggbb"
    logo_key: Mapped[str | None] = mapped_column(String(300))  # in the photo store
    privacy_controller: Mapped[str | None] = mapped_column(String(300))  # who holds the runners' data
    privacy_retention: Mapped[str | None] = mapped_column(String(300))  # for how long
    # bumped by every enrolment and runner deletion: workers cache the runner matrix per version
    runners_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # a threshold change rematches in the background (REMATCH_EVENT): photos to do and done
    rematch_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rematch_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rematch_cursor: Mapped[str | None] = mapped_column(String(40))  # the last photo id rematched
