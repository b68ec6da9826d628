from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class MatchSource:
    """How a match was found (API.md v1.1): the face, the bib number, or both agreeing."""

    FACE = "face"
    BIB = "bib"
    FACE_BIB = "face+bib"


class Match(IdMixin, Base):
    """A runner found in a photo. A face has at most one runner; a runner at most one match per photo.

    A bib read without a visible face gives a match with no face (`face_id` and `similarity` null).
    """

    __tablename__ = "matches"
    __table_args__ = (
        UniqueConstraint("face_id"),
        UniqueConstraint("runner_id", "photo_id"),
        Index(None, "event_id"),
        Index(None, "photo_id"),  # every per-photo rematch and photo-delete cascade filters on it
    )

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"))
    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    face_id: Mapped[str | None] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"))
    # cosine to the runner's face; null: bib only, or the event's biometrics were purged
    similarity: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(10), default=MatchSource.FACE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MatchRejection(IdMixin, Base):
    """'Not me': this photo never goes back into this runner's gallery, whatever is recomputed."""

    __tablename__ = "match_rejections"
    __table_args__ = (UniqueConstraint("runner_id", "photo_id"), Index(None, "photo_id"))

    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"))
    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
