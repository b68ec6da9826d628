from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin


class Face(IdMixin, Base):
    """A face found in a photo. The box is in the original photo's pixels (after EXIF orientation)."""

    __tablename__ = "faces"
    __table_args__ = (
        Index(None, "event_id", "model_id"),
        # faces excluded since a face matrix's last sync (app/services/face_matrix.py)
        Index("ix_faces_excluded", "event_id", "excluded_at",
              postgresql_where=text("excluded_at IS NOT NULL"), sqlite_where=text("excluded_at IS NOT NULL")),
    )

    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    size_px: Mapped[float] = mapped_column(Float)  # the box's smaller side, for tuning the size gate
    landmarks: Mapped[list] = mapped_column(JSON)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, L2-normalised; None once purged
    model_id: Mapped[str] = mapped_column(String(100))  # never compare vectors of different models
    # Set when the runner this face matched erased their data: it is never handed to anyone else.
    # A mark, not a template: nothing about the erased person's face is kept.
    excluded_at: Mapped[datetime | None]

    @property
    def box(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]
