"""A runner's gallery `/g/{token}` and delete-my-data `/d/{token}` (app/services/gallery.py).

Images are served only through these routes, each looked up through the runner's matches.
They never change under their URL, so they carry an ETag and a private max-age: reopening the
gallery is instant, and a revalidation is a 304. Every photo also has a page of its own
(`/g/{token}/p/{photo_id}`): the viewer without script, and a link that survives a refresh.
"""

from __future__ import annotations


from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from app.api.deps import SettingsDep, StoreDep, UoW
from app.errors import NotFound
from app.pages.templating import PRIVATE_HEADERS, attachment, event_context, message, page
from app.services import events as event_service
from app.services import gallery as gallery_service
from app.services import privacy
from app.services import runners as runner_service

router = APIRouter(include_in_schema=False)
GONE = ("Link not valid", "This link is not valid, or the data it pointed to has been deleted.")
IMAGE_CACHE = "private, max-age=604800"  # a week; images under one URL never change


@router.get("/g/{token}", response_class=HTMLResponse)
def show_gallery(token: str, uow: UoW, settings: SettingsDep, removed: str | None = None,
                 restored: str | None = None) -> HTMLResponse:
    try:
        runner = gallery_service.runner_for(uow, settings, "gallery", token)
    except NotFound:
        return message(*GONE, status_code=404)
    event = event_service.get_event(uow, runner.event_id)
    items = gallery_service.gallery_items(uow, runner)
    restored_back = restored is not None and any(item.photo.id == restored for item in items)
    return page("gallery.html", **event_context(uow, event), runner=runner, items=items, base=f"/g/{token}",
                delete_url=gallery_service.delete_url(settings, runner.id), removed=removed,
                restored=restored, restored_back=restored_back,
                biometrics_expire_at=privacy.biometrics_expire_at(event), purged=event.biometrics_purged_at)


@router.get("/g/{token}/p/{photo_id}", response_class=HTMLResponse)
def show_photo(token: str, photo_id: str, uow: UoW, settings: SettingsDep) -> HTMLResponse:
    try:
        runner = gallery_service.runner_for(uow, settings, "gallery", token)
    except NotFound:
        return message(*GONE, status_code=404)
    items = gallery_service.gallery_items(uow, runner)
    index = next((i for i, item in enumerate(items) if item.photo.id == photo_id), None)
    if index is None:
        return message("Photo not found", "This photo is not in your gallery (any more).", 404,
                       link={"href": f"/g/{token}", "text": "Back to your photos"})
    event = event_service.get_event(uow, runner.event_id)
    return page("photo.html", **event_context(uow, event), runner=runner, item=items[index], index=index,
                total=len(items), base=f"/g/{token}",
                prev=items[index - 1].photo.id if index > 0 else None,
                next=items[index + 1].photo.id if index + 1 < len(items) else None)


@router.get("/g/{token}/photos/{photo_id}/{size}")
def photo_file(token: str, photo_id: str, size: str, request: Request, uow: UoW, settings: SettingsDep,
               store: StoreDep) -> Response:
    runner = gallery_service.runner_for(uow, settings, "gallery", token)
    photo = gallery_service.matched_photo(uow, runner, photo_id)
    keys = {"thumb": photo.thumb_key, "preview": photo.preview_key, "original": photo.storage_key}
    if not keys.get(size):
        raise NotFound("No such image.", code="image_not_found")
    etag = f'"{photo.sha256[:24]}-{size}"'
    headers = {**PRIVATE_HEADERS, "Cache-Control": IMAGE_CACHE, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
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
    event = event_service.get_event(uow, runner.event_id)
    headers = {**PRIVATE_HEADERS, "Content-Disposition": attachment(f"{event.slug.rsplit('-', 1)[0]}-photos.zip")}
    return StreamingResponse(gallery_service.zip_stream(store, photos), media_type="application/zip",
                             headers=headers)


@router.post("/g/{token}/photos/{photo_id}/not-me")
def not_me(token: str, photo_id: str, uow: UoW, settings: SettingsDep) -> RedirectResponse:
    runner = gallery_service.runner_for(uow, settings, "gallery", token)
    gallery_service.reject_photo(uow, runner, photo_id)
    return RedirectResponse(f"/g/{token}?removed={quote(photo_id)}#undo", status_code=303)


@router.post("/g/{token}/photos/{photo_id}/undo")
def undo_not_me(token: str, photo_id: str, uow: UoW, settings: SettingsDep) -> RedirectResponse:
    runner = gallery_service.runner_for(uow, settings, "gallery", token)
    gallery_service.undo_reject(uow, runner, photo_id)
    return RedirectResponse(f"/g/{token}?restored={quote(photo_id)}", status_code=303)


@router.get("/d/{token}", response_class=HTMLResponse)
def confirm_delete(token: str, uow: UoW, settings: SettingsDep) -> HTMLResponse:
    # GET only asks: link scanners in mail clients fetch URLs without the runner clicking.
    try:
        runner = gallery_service.runner_for(uow, settings, "delete", token)
    except NotFound:
        return message(*GONE, status_code=404)
    event = event_service.get_event(uow, runner.event_id)
    return page("delete.html", **event_context(uow, event), runner=runner, event_name=event.name, token=token,
                gallery=gallery_service.gallery_url(settings, runner.id))


@router.post("/d/{token}", response_class=HTMLResponse)
def delete_data(token: str, uow: UoW, settings: SettingsDep, store: StoreDep) -> HTMLResponse:
    try:
        runner = gallery_service.runner_for(uow, settings, "delete", token)
    except NotFound:
        return message(*GONE, status_code=404)
    event = event_service.get_event(uow, runner.event_id)
    runner_service.delete_runner(uow, store, runner.id, outbox_dir=settings.outbox_dir)
    return message("Your data is deleted", "Your face template, your matches and your gallery are gone. "
                   "We will not e-mail you about these photos again.", **event_context(uow, event))
