from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """An error, as RFC 9457 problem details with a stable `code` (app/errors.py renders it)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "type": "https://finishline.dev/problems/event_not_found", "title": "Not found", "status": 404,
        "detail": "No event with id '0190c7a35b2e4f00a1b2c3'.", "code": "event_not_found"}]})

    type: str = Field(description="A URI naming the kind of problem")
    title: str = Field(description="The HTTP status in words")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong, for a person to read")
    code: str = Field(description="Stable and machine-readable: switch on this, never on `detail`")
