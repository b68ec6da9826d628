"""The FastAPI application: routers, error handlers, and the resources it holds."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.api import events, health, keys, notify, photos, runners, webhooks
from app.api.openapi import install_openapi
from app.browser_policy import BrowserPolicy
from app.config import Settings, load_settings
from app.db.session import make_engine, make_sessionmaker
from app.errors import install_error_handlers
from app.limits import FORM_OVERHEAD_BYTES, BodySizeLimit
from app.pages import api_docs, bib_search, gallery, selfie, unsubscribe
from app.pages.templating import STATIC_DIR
from app.storage import make_store
from worker.celery_app import create_celery
from worker.dispatch import CelerySender

API_PREFIX = "/api/v1"
API_DESCRIPTION = """Gets race photos to the runners in them.

Every `/api/v1` call carries `Authorization: Bearer <api key>`. Errors are
`application/problem+json` (RFC 9457) with a stable `code`: switch on `code`, never on `detail`.
Each operation below lists the codes it can answer with."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url, **settings.engine_options)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        engine.dispose()

    app = FastAPI(title="Finishline", version="1.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=API_DESCRIPTION)
    celery = create_celery(settings)
    app.state.settings = settings
    app.state.make_session = make_sessionmaker(engine)
    app.state.store = make_store(settings.storage_url, settings.photos_dir)
    app.state.celery = celery
    app.state.sender = CelerySender(celery)

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes,
                       max_form_bytes=settings.max_file_bytes + FORM_OVERHEAD_BYTES)
    app.add_middleware(BrowserPolicy, public_base_url=settings.public_base_url)  # every answer
    # Outermost: the client address and scheme behind a trusted proxy, before anything uses them.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(health.router)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(photos.router, prefix=API_PREFIX)
    app.include_router(runners.router, prefix=API_PREFIX)
    app.include_router(selfie.router)
    app.include_router(bib_search.router)
    app.include_router(gallery.router)
    app.include_router(notify.router, prefix=API_PREFIX)
    app.include_router(keys.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    webhooks.document_deliveries(app)
    app.include_router(unsubscribe.router)
    app.include_router(api_docs.router)
    api_docs.mount_docs_assets(app)
    install_openapi(app)
    settings.signing_keys  # noqa: B018 - create the embedded secret now, not in a request
    logging.getLogger(__name__).info("Finishline API ready (data dir %s)", settings.data_dir.resolve())
    return app
