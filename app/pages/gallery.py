"""A runner's gallery `/g/{token}` and delete-my-data `/d/{token}` (app/services/gallery.py).

Images are served only through these routes, each looked up through the runner's matches.
"""

from __future__ import annotations


from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from app.api.deps import SettingsDep, StoreDep, UoW
from app.errors import NotFound
from app.pages.templating import PRIVATE_HEADERS, attachment, message, page
from app.services import events as event_service
from app.services import gallery as gallery_service
from app.services import privacy
from app.services import runners as runner_service

router = APIRouter(include_in_schema=False)
GONE = ("Link not valid", "This link is not valid, or the data it pointed to has been deleted.")


@router.get("/g/{token}", response_class=HTMLResponse)
def show_gallery(token: str, uow: UoW, settings: SettingsDep) -> HTMLResponse:
    try:
        runner = gallery_service.runner_for(uow, settings, "gallery", token)
    except NotFound:
        return message(*GONE, status_code=404)
    event = event_service.get_event(uow, runner.event_id)
    return page("gallery.html", runner=runner, photos=gallery_service.matched_photos(uow, runner),
                base=f"/g/{token}", delete_url=gallery_service.delete_url(settings, runner.id),
                biometrics_expire_at=privacy.biometrics_expire_at(event), purged=event.biometrics_purged_at)


@router.get("/g/{token}/photos/{photo_id}/{size}")
def photo_file(token: str, photo_id: str, size: str, uow: UoW, settings: SettingsDep,
               store: StoreDep) -> StreamingResponse:
    runner = gallery_service.runner_for(uow, settings, "gallery", token)
    photo = gallery_service.matched_photo(uow, runner, photo_id)
    keys = {"thumb": photo.thumb_key, "preview": photo.preview_key, "original": photo.storage_key}
    if not keys.get(size):
        raise NotFound("No such image.", code="image_not_found")
    headers = dict(PRIVATE_HEADERS)
    media_type = "image/jpeg"
    if size == "original":
        media_type = photo.content_type
        headers["Content-Disposition"] = attachment(gallery_service.download_name(photo))
    return StreamingResponse(gallery_service.read_chunks(store, keys[size]), media_type=media_type,
                             headers=headers)


@router.get("/g/{token}/photos.zip")
def photos_zip(token: str, uow: UoW, settings: SettingsDep, store: StoreDep) -> StreamingResponse:
    runner = gallery_service.runner_for(uow, settings, "gallery", token)
    photos = gallery_service.matched_photos(uow, runner)
    headers = {**PRIVATE_HEADERS, "Content-Disposition": attachment("photos.zip")}
    return StreamingResponse(gallery_service.zip_stream(store, photos), media_type="application/zip",
                             headers=headers)


@router.post("/g/{token}/photos/{photo_id}/not-me")
def not_me(token: str, photo_id: str, uow: UoW, settings: SettingsDep) -> RedirectResponse:
    runner = gallery_service.runner_for(uow, settings, "gallery", token)
    gallery_service.reject_photo(uow, runner, photo_id)
    return RedirectResponse(f"/g/{token}", status_code=303)


@router.get("/d/{token}", response_class=HTMLResponse)
def confirm_delete(token: str, uow: UoW, settings: SettingsDep) -> HTMLResponse:
    # GET only asks: link scanners in mail clients fetch URLs without the runner clicking.
    try:
        runner = gallery_service.runner_for(uow, settings, "delete", token)
    except NotFound:
        return message(*GONE, status_code=404)
    event = event_service.get_event(uow, runner.event_id)
    return page("delete.html", runner=runner, event_name=event.name, token=token)


@router.post("/d/{token}", response_class=HTMLResponse)
def delete_data(token: str, uow: UoW, settings: SettingsDep, store: StoreDep) -> HTMLResponse:
    try:
        runner = gallery_service.runner_for(uow, settings, "delete", token)
    except NotFound:
        return message(*GONE, status_code=404)
    runner_service.delete_runner(uow, store, runner.id, outbox_dir=settings.outbox_dir)
    return message("Your data is deleted", "Your face template, your matches and your gallery are gone.")
