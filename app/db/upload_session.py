from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class UploadSession(IdMixin, Base):
    """One file the dashboard uploads in pieces (app/services/chunked_uploads.py).

    Pieces live in the photo store (any API instance can take the next one); `chunks` lists
    their offsets. Once complete, the file goes through the same Uploader as the API.
    """

    __tablename__ = "upload_sessions"
    __table_args__ = (Index(None, "event_id", "status"),)

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks: Mapped[list] = mapped_column(JSON, default=list)  # [offset, ...] in order
    status: Mapped[str] = mapped_column(String(20), default="receiving")  # receiving | complete | assembling | done | failed
    result: Mapped[dict | None] = mapped_column(JSON)  # the upload report once done
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # assemblies started
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
