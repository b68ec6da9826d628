"""The Jinja2 environment of the pages (autoescaped HTML under app/pages/templates)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC_DIR = Path(__file__).parent / "static"  # served at /static/ (no inline style: the CSP forbids it)
# Pages behind secret links must not be indexed or cached by shared caches.
PRIVATE_HEADERS = {"X-Robots-Tag": "noindex, nofollow", "Cache-Control": "private, no-store"}


def attachment(filename: str) -> str:
    """A Content-Disposition value that downloads under `filename` (any characters)."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def page(name: str, status_code: int = 200, **context: object) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code,
                        headers=PRIVATE_HEADERS)


def message(title: str, text: str, status_code: int = 200) -> HTMLResponse:
    return page("message.html", status_code, title=title, message=text)
