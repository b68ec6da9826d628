from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NotifyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"queued": 12}]})

    queued: int = Field(description="E-mails queued: one per runner with photos not yet e-mailed")
