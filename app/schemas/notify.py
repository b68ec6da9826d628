from __future__ import annotations

from pydantic import BaseModel, Field


class NotifyOut(BaseModel):
    queued: int = Field(description="E-mails queued: one per runner with photos not yet e-mailed")
