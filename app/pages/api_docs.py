"""`/docs`: the OpenAPI reference (Swagger UI), served entirely by this process.

Swagger UI's files come from the `fastapi-offline` package (PyPI), our start script from
app/pages/static/docs; nothing is loaded from another host, so the page works offline and under
the site's Content-Security-Policy (no inline script).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.pages.templating import templates

ASSETS_PATH = "/docs/assets"
router = APIRouter(include_in_schema=False)


def mount_docs_assets(app: FastAPI) -> None:
    files = StaticFiles(directory=Path(__file__).parent / "static" / "docs",
                        packages=[("fastapi_offline", "static")])
    app.mount(ASSETS_PATH, files, name="docs-assets")


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    html = templates.get_template("api_docs.html").render(
        title=request.app.title, assets=root + ASSETS_PATH, openapi_url=root + (request.app.openapi_url or ""))
    return HTMLResponse(html)
