"""Signing in and out, the signed-in dependency, and CSRF tokens.

- The session cookie `fl_session` is HttpOnly, SameSite=Lax, Secure on https, and signed; it
  names a DashboardSession row (app/services/dashboard_sessions.py), deleted on sign-out.
- CSRF: every dashboard form carries `csrf_token`, an HMAC of the session id, and scripts send
  it as `X-CSRF-Token`. The sign-in form, before any session exists, uses a double-submit token
  (a random cookie that the form must repeat).
- Sign-in is rate-limited per client address and per e-mail address (app/ratelimit.py).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.api.deps import SettingsDep, UoW
from app.auth import Caller
from app.config import Settings
from app.db import User
from app.errors import Forbidden, Unauthorized
from app.pages.templating import page
from app.ratelimit import SlidingWindowLimiter, client_address
from app.services import accounts
from app.services import dashboard_sessions as sessions
from app.services import organisations

router = APIRouter()
SESSION_COOKIE = "fl_session"
LOGIN_COOKIE = "fl_login"
LOGIN_ATTEMPTS = (10, 300.0)  # per address and per e-mail: 10 tries in 5 minutes
_limiter_lock = threading.Lock()


@dataclass(frozen=True)
class SignedIn:
    user: User
    caller: Caller
    session_id: str
    csrf_token: str
    organisation_name: str


class SignInRequired(Exception):
    def __init__(self, next_path: str, wants_json: bool) -> None:
        self.next_path, self.wants_json = next_path, wants_json


def _csrf_for(settings: Settings, session_id: str) -> str:
    return hmac.new(settings.signing_key.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.method not in ("GET", "HEAD")


def signed_in(request: Request, uow: UoW, settings: SettingsDep) -> SignedIn:
    found = sessions.session_user(uow, settings.signing_key, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise SignInRequired(request.url.path, _wants_json(request))
    session_id, user = found
    organisation = organisations.get_organisation(uow, user.organisation_id)
    return SignedIn(user, Caller.for_user(user), session_id, _csrf_for(settings, session_id), organisation.name)


async def signed_in_with_csrf(request: Request, settings: SettingsDep,
                              who: Annotated[SignedIn, Depends(signed_in)]) -> SignedIn:
    """For every POST: the session, and its CSRF token in the form or the X-CSRF-Token header."""
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        token = (await request.form(max_files=5000, max_fields=100)).get("csrf_token")
    check_csrf(who, token)
    return who


def check_csrf(who: SignedIn, token: object) -> None:
    """`token` (from the X-CSRF-Token header or the form's `csrf_token`) must be the session's."""
    if not isinstance(token, str) or not hmac.compare_digest(token, who.csrf_token):
        raise Forbidden("The form expired or came from another site. Please reload the page and try again.",
                        code="csrf_failed")


SignedInDep = Annotated[SignedIn, Depends(signed_in)]
PostDep = Annotated[SignedIn, Depends(signed_in_with_csrf)]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _to_login(_: Request, exc: SignInRequired) -> Response:
        if exc.wants_json:
            return JSONResponse({"error": "Please sign in again.", "code": "signed_out"}, status_code=401)
        return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)


def _limiter(request: Request, name: str) -> SlidingWindowLimiter:
    with _limiter_lock:
        limiter = getattr(request.app.state, name, None)
        if limiter is None:
            limiter = SlidingWindowLimiter(*LOGIN_ATTEMPTS)
            setattr(request.app.state, name, limiter)
        return limiter


def _safe_next(next_path: str | None) -> str:
    # only our own dashboard: never an absolute or protocol-relative URL (open redirect)
    if next_path and next_path.startswith("/dashboard") and not next_path.startswith("//"):
        return next_path
    return "/dashboard"


def _secure(settings: Settings) -> bool:
    return settings.public_base_url.startswith("https://")


def _login_page(settings: Settings, *, status: int = 200, error: str | None = None,
                email: str = "", next_path: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = page("dashboard/login.html", status, error=error, email=email, login_token=token,
                    next_path=_safe_next(next_path))
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=_secure(settings), path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, uow: UoW, settings: SettingsDep, next: str | None = None) -> Response:
    if sessions.session_user(uow, settings.signing_key, request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(settings, next_path=next)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, uow: UoW, settings: SettingsDep, email: Annotated[str, Form(max_length=320)] = "",
          password: Annotated[str, Form(max_length=1024)] = "", login_token: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/dashboard") -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, login_token):
        return _login_page(settings, status=403, email=email, next_path=next,
                           error="The sign-in form expired. Please try again.")
    for name, key in (("login_by_address", client_address(request)),
                      ("login_by_email", accounts.normalise_email(email))):
        wait = _limiter(request, name).hit(key)
        if wait > 0:
            response = _login_page(settings, status=429, email=email, next_path=next,
                                   error=f"Too many sign-in attempts. Please wait {math.ceil(wait)} seconds.")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
    try:
        user = accounts.authenticate_user(uow, email=email, password=password)
    except Unauthorized as exc:
        return _login_page(settings, status=401, email=email, next_path=next, error=exc.detail)
    cookie_value = sessions.start_session(uow, settings.signing_key, user)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie_value, max_age=int(sessions.SESSION_LIFETIME.total_seconds()),
                        httponly=True, samesite="lax", secure=_secure(settings), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, uow: UoW, settings: SettingsDep, _who: PostDep) -> Response:
    sessions.end_session(uow, settings.signing_key, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
