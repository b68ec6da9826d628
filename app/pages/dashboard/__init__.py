"""The organiser dashboard: `/login`, `/dashboard` and everything under it.

auth.py     sign-in, sessions (signed HttpOnly cookie -> a DashboardSession row), CSRF, sign-out
events.py   the event list and each event's pages (overview with uploads and live counts,
            runners, sending, settings)
uploads.py  the resumable upload endpoints behind the event page's uploader

Every route resolves the signed-in user to a `Caller` (`Caller.for_user`) and reaches rows only
through app/services/access.py and the services, exactly like the API.
"""

from fastapi import APIRouter, FastAPI

from app.pages.dashboard import auth, events, uploads


def install(app: FastAPI) -> None:
    router = APIRouter(include_in_schema=False)
    router.include_router(auth.router)
    router.include_router(events.router)
    router.include_router(uploads.router)
    app.include_router(router)
    auth.install_handlers(app)
