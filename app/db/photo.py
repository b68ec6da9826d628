from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class PhotoStatus(str, enum.Enum):
    pending = "pending"
    processing = "processing"
    done = "done"
    failed = "failed"


class Photo(IdMixin, Base):
    __tablename__ = "photos"
    __table_args__ = (
        UniqueConstraint("event_id", "sha256"),
        Index(None, "event_id", "status"),
        Index(None, "status", "queued_at"),
        Index(None, "event_id", "id"),  # cursor paging of an event's photos
        Index(None, "event_id", "status", "id"),  # the same, filtered by status
        Index(None, "event_id", "processed_at"),  # the face matrix's sync: photos processed since
        # the sweeper's scan for lost or stale work, over waiting photos only
        Index("ix_photos_waiting", "queued_at",
              postgresql_where=text("status IN ('pending', 'processing')"),
              sqlite_where=text("status IN ('pending', 'processing')")),
    )

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    storage_key: Mapped[str] = mapped_column(String(300))
    preview_key: Mapped[str | None] = mapped_column(String(300))
    thumb_key: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default=PhotoStatus.pending.value)
    error: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # Bookkeeping for redelivery: when it was last queued / claimed by a worker, and how often.
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))  # the Celery task id holding it
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]
    # faces stored for this photo, so event stats sum photos instead of counting every face
    face_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
