from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin


class BibRead(IdMixin, Base):
    """A bib number read on a photo (models/bibs.py). The box is in the original photo's pixels."""

    __tablename__ = "bib_reads"
    __table_args__ = (Index(None, "event_id", "number"),)

    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    # the face whose torso holds the bib, or null (read by the whole-photo pass, no face seen)
    face_id: Mapped[str | None] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(6))  # digits only, as printed (leading zeros kept)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    text_px: Mapped[float] = mapped_column(Float)  # the numerals' height, for tuning the filters
    model_id: Mapped[str] = mapped_column(String(100))

    @property
    def box(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]
