from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class Match(IdMixin, Base):
    """A runner found in a photo. A face has at most one runner; a runner at most one face per photo."""

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
    face_id: Mapped[str] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"))
    similarity: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MatchRejection(IdMixin, Base):
    """'Not me': this photo never goes back into this runner's gallery, whatever is recomputed."""

    __tablename__ = "match_rejections"
    __table_args__ = (UniqueConstraint("runner_id", "photo_id"), Index(None, "photo_id"))

    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"))
    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
