from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class DeliveryStatus(str, enum.Enum):
    """queued -> sending -> sent. See app/services/notify.py for why each state exists."""

    queued = "queued"  # waiting for a worker (also between retries: nothing reached the server)
    sending = "sending"  # handed to the SMTP server by `claimed_by`; outcome not yet recorded
    sent = "sent"  # the server accepted it; DeliveredPhoto rows exist
    failed = "failed"  # refused or unreachable after the last retry; its photos may be re-notified
    uncertain = "uncertain"  # a worker died mid-send: maybe accepted, so never resent automatically
    cancelled = "cancelled"  # nothing left to announce when a worker took it (unsubscribed, deleted...)


class Delivery(IdMixin, Base):
    """One e-mail to one runner."""

    __tablename__ = "deliveries"
    __table_args__ = (Index(None, "status", "queued_at"),)

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.queued.value)
    photo_ids: Mapped[list] = mapped_column(JSON, default=list)  # what this message announces
    message_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Bookkeeping for redelivery, as on Photo: when it was last queued, and which task took it when.
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None]


class DeliveredPhoto(Base):
    """A photo already e-mailed to a runner: written only after the SMTP server accepted it."""

    __tablename__ = "delivered_photos"
    # the two indexes serve the cascades from photos and deliveries
    __table_args__ = (UniqueConstraint("runner_id", "photo_id"), Index(None, "photo_id"), Index(None, "delivery_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    runner_id: Mapped[str] = mapped_column(ForeignKey("runners.id", ondelete="CASCADE"))
    photo_id: Mapped[str] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
