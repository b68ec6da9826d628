"""The Jinja2 environment of the pages (autoescaped HTML under app/pages/templates).

Every page extends base.html (landmarks, skip link, the one stylesheet). Runner pages pass
`event_context(...)` so the header shows the event's name, date and logo.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from urllib.parse import quote

from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from app.db import Event
from app.db.session import UnitOfWork
from app.services import branding, organisations

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
# Pages behind secret links must not be indexed or cached by shared caches.
PRIVATE_HEADERS = {"X-Robots-Tag": "noindex, nofollow", "Cache-Control": "private, no-store"}


def attachment(filename: str) -> str:
    """A Content-Disposition value that downloads under `filename` (any characters)."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def _asset_version() -> str:
    """A hash of the static files: `?v=` on their URLs, so a deploy is never half cached."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def long_date(value: date | None) -> str:
    return f"{value:%A} {value.day} {value:%B %Y}" if value else ""


templates.env.globals["asset_version"] = _asset_version()
templates.env.filters["long_date"] = long_date


def event_context(uow: UnitOfWork, event: Event) -> dict:
    """What every runner page of an event shows: its name, date, logo and privacy facts."""
    organisation = organisations.get_organisation(uow, event.organisation_id)
    return {
        "event": event,
        "privacy_controller": branding.privacy_controller(event, organisation.name),
        "privacy_retention": branding.privacy_retention(event),
    }


def page(name: str, status_code: int = 200, headers: dict | None = None, **context: object) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code,
                        headers={**PRIVATE_HEADERS, **(headers or {})})


def message(title: str, text: str, status_code: int = 200, **context: object) -> HTMLResponse:
    return page("message.html", status_code, title=title, message=text, **context)
