"""The unsubscribe link of every e-mail: `/u/{token}`, token purpose "unsubscribe".

POST unsubscribes at once: that is RFC 8058 one-click, which mailbox providers send with the body
`List-Unsubscribe=One-Click` and no cookies, so the signed token alone authorises it. GET only shows
a button, because link scanners and previews fetch URLs from e-mails without the runner asking.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from app.api.deps import SettingsDep, UoW
from app.pages.templating import page
from app.services import notify as notify_service
from app.services.tokens import read_token

router = APIRouter(include_in_schema=False)


@router.get("/u/{token}", response_class=HTMLResponse)
def confirm_unsubscribe(token: str, settings: SettingsDep) -> HTMLResponse:
    read_token(settings.signing_keys, "unsubscribe", token)  # a bad link is a 404, not a button
    return page("unsubscribe.html", done=False)


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, uow: UoW, settings: SettingsDep) -> HTMLResponse:
    notify_service.unsubscribe(uow, read_token(settings.signing_keys, "unsubscribe", token))
    return page("unsubscribe.html", done=True)
