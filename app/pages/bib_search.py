"""Find my photos by bib, `/e/{slug}/bib?number=N`: for events whose organiser allows it
(`Event.bib_search_public`, off by default: anyone who knows a number sees that runner's photos).

It shows only photos (thumbnails, larger previews and the original file), never a runner's
name, e-mail or any other row: the number is all it knows. Each image is served only when that
number was read on that photo, and each search counts against the per-address rate limit of
the public forms, so the event's photos cannot be walked by trying numbers quickly.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from app.api.deps import StoreDep, UoW
from app.errors import NotFound, TooManyRequests
from app.pages.templating import PRIVATE_HEADERS, attachment, message, page
from app.ratelimit import limit_public_form
from app.services import events as event_service
from app.services import gallery as gallery_service
from app.services import photos as photo_service

router = APIRouter(include_in_schema=False)
NUMBER = re.compile(r"\d{1,6}")
MAX_RESULTS = 200


def _event(uow, slug: str):  # type: ignore[no-untyped-def]
    event = event_service.get_event_by_slug(uow, slug)
    if not event.bib_search_public:
        raise NotFound("This event does not offer search by bib number.", code="bib_search_off")
    return event


@router.get("/e/{slug}/bib", response_class=HTMLResponse)
def search(slug: str, request: Request, uow: UoW, number: str = "") -> HTMLResponse:
    try:
        event = _event(uow, slug)
    except NotFound as exc:
        return message("Not available", exc.detail, 404)
    number = number.strip()
    if not NUMBER.fullmatch(number):
        return page("bib_search.html", 422, event=event, number=number, photos=None,
                    error="Please enter your bib number: 1 to 6 digits.")
    try:
        limit_public_form(request, scope=f"bib-search:{event.id}")  # its own bucket, apart from enrolment
    except TooManyRequests as exc:
        response = page("bib_search.html", 429, event=event, number=number, photos=None,
                        error=f"Too many searches from your address. Please try again in {exc.retry_after} s.")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    photos, _ = photo_service.list_photos(uow, event.id, status="done", limit=MAX_RESULTS, cursor=None, bib=number)
    return page("bib_search.html", event=event, number=number, photos=photos, error=None,
                base=f"/e/{event.slug}/bib/{number}")


@router.get("/e/{slug}/bib/{number}/photos/{photo_id}/{size}")
def photo_file(slug: str, number: str, photo_id: str, size: str, uow: UoW, store: StoreDep) -> StreamingResponse:
    event = _event(uow, slug)
    if not NUMBER.fullmatch(number):
        raise NotFound("No such image.", code="image_not_found")
    photo = photo_service.photo_with_bib(uow, event.id, number, photo_id)
    keys = {"thumb": photo.thumb_key, "preview": photo.preview_key, "original": photo.storage_key}
    if not keys.get(size):
        raise NotFound("No such image.", code="image_not_found")
    headers = dict(PRIVATE_HEADERS)
    media_type = "image/jpeg"
    if size == "original":
        media_type = photo.content_type
        headers["Content-Disposition"] = attachment(gallery_service.download_name(photo))
    return StreamingResponse(gallery_service.read_chunks(store, keys[size]), media_type=media_type, headers=headers)
