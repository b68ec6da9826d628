from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class DashboardSession(IdMixin, Base):
    """A signed-in browser (app/services/dashboard_sessions.py). Signing out deletes the row, so
    a copied cookie stops working at once; only a hash of the cookie's secret is stored."""

    __tablename__ = "dashboard_sessions"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
