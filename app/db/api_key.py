from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, utcnow


class ApiKey(IdMixin, Base):
    """A key of one organisation. Only a SHA-256 of its secret part is stored (the key is 256 random bits).

    scope `organiser`: everything in the organisation; `partner`: enrol runners and read back its
    own, for `event_ids` (every event of the organisation when empty). See app/auth.py.
    """

    __tablename__ = "api_keys"

    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(20), default="organiser")
    event_ids: Mapped[list] = mapped_column(JSON, default=list)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
