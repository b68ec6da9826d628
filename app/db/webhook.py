"""Webhooks as rows: an endpoint, an event (one per endpoint, with a stable id) and a delivery per attempt.

The flow is app/services/webhooks.py's: events are written in the transaction that caused them,
the worker sends each (signed), records every attempt, and retries with backoff.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class WebhookEndpoint(IdMixin, Base):
    __tablename__ = "webhook_endpoints"

    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))  # signs deliveries; the receiver holds it too
    events: Mapped[list] = mapped_column(JSON, default=list)  # the types it subscribes to
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEventStatus(str, enum.Enum):
    pending = "pending"  # not yet answered 2xx; the worker is on it (or retrying)
    delivered = "delivered"  # answered 2xx once: never sent again
    failed = "failed"  # no 2xx after the last retry


class WebhookEvent(IdMixin, Base):
    """One event for one endpoint. `id` is the body's `id`: the same on every attempt."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index(None, "status", "last_attempt_at"),)

    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    # the race event it is about: deleting that event deletes its deliveries too (API.md)
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(50))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent, so every attempt signs the same bytes
    status: Mapped[str] = mapped_column(String(20), default=WebhookEventStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(IdMixin, Base):
    """One attempt to send a WebhookEvent, with the receiver's answer (or why there was none)."""

    __tablename__ = "webhook_deliveries"

    webhook_event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)  # the first KiB, for the organiser to debug
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
