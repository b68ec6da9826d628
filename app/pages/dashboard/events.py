"""The dashboard's event pages: list and create, photos (upload, live counts, problems),
runners (search, resend, delete, CSV), sending (preview, sample, QR code) and settings.

Each route: the signed-in caller, `access.get_event` (another organisation's event is a 404),
one service call, a template or a 303 back to a page (post/redirect/get).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import date
from typing import Annotated

import segno
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api import upload_body
from app.api.deps import SettingsDep, StoreDep, UoW, UowFactory
from app.browser_policy import EMAIL_SAMPLE_POLICY
from app.config import Settings
from app.errors import AppError, NotFound
from app.pages.dashboard.auth import PostDep, SignedInDep, check_csrf
from app.pages.templating import PRIVATE_HEADERS, page
from app.services import access, branding, chunked_uploads
from app.services import email as email_service
from app.services import events as event_service
from app.services import gallery as gallery_service
from app.services import matching as matching_service
from app.services import notify as notify_service
from app.services import photos as photo_service
from app.services import runners as runner_service
from app.services import start_list
from app.services.uploads import Uploader, upload_limits

router = APIRouter()
RUNNERS_PER_PAGE = 50
EVENTS_SHOWN = 200
# what a redirect's `?done=` says; codes only, so no page echoes text from a URL
FLASHES = {
    "created": "Event created. Upload photos below, and share the selfie page with your runners.",
    "retried": "The photo is queued again.",
    "notified": "E-mail queued.", "nothing": "Nothing new to e-mail to this runner.",
    "deleted": "Runner deleted, with their face template and matches.",
    "saved": "Settings saved.",
    "rematching": "Settings saved. The photos are being matched again with the new threshold (progress below).",
    "event_deleted": "Event deleted, with its photos, runners and matches.",
}


def _event_page(name: str, who, event, tab: str, request: Request, **context) -> HTMLResponse:
    done = request.query_params.get("done")
    if done == "sent":
        context.setdefault("flash", f"{request.query_params.get('n', '0')} e-mails queued.")
    status_code = context.pop("status_code", 200)
    return page(name, status_code, who=who, event=event, tab=tab, nav="events",
                flash=context.pop("flash", FLASHES.get(done or "")), **context)


def _back(event_id: str, path: str = "", done: str | None = None) -> RedirectResponse:
    suffix = f"?done={done}" if done else ""
    return RedirectResponse(f"/dashboard/events/{event_id}{path}{suffix}", status_code=303)


# --- events ------------------------------------------------------------------------------

@router.get("/admin")  # not "/": a gallery link garbled to /g/.. normalises to it and must stay a 404
def admin() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/dashboard", response_class=HTMLResponse)
def events_page(request: Request, uow: UoW, settings: SettingsDep, who: SignedInDep) -> HTMLResponse:
    return page("dashboard/events.html", who=who, events=_event_rows(uow, who), nav="events",
                flash=FLASHES.get(request.query_params.get("done") or ""),
                default_threshold=settings.default_match_threshold)


def _event_rows(uow, who) -> list[dict]:
    events, _ = event_service.list_events(uow, who.caller, limit=EVENTS_SHOWN, cursor=None)
    return [{"event": e, "stats": event_service.event_stats(uow, e.id)} for e in events]


@router.post("/dashboard/events")
def create_event(uow: UoW, settings: SettingsDep, who: PostDep, name: Annotated[str, Form()] = "",
                 starts_on: Annotated[str, Form()] = "", match_threshold: Annotated[str, Form()] = "") -> Response:
    access.require_organiser(who.caller)
    try:
        day, threshold = _parse_event_fields(name, starts_on, match_threshold, settings.default_match_threshold)
    except AppError as exc:
        return page("dashboard/events.html", 422, who=who, events=_event_rows(uow, who), nav="events", error=exc.detail,
                    values={"name": name, "starts_on": starts_on},
                    default_threshold=settings.default_match_threshold)
    event = event_service.create_event(uow, organisation_id=who.caller.organisation_id, name=name.strip(),
                                       starts_on=day, match_threshold=threshold,
                                       retention_days=settings.retention_days)
    return _back(event.id, done="created")


def _parse_event_fields(name: str, starts_on: str, threshold: str, default: float) -> tuple[date | None, float]:
    if not name.strip() or len(name) > 200:
        raise AppError("Please give the event a name (at most 200 characters).", code="validation_error")
    try:
        day = date.fromisoformat(starts_on) if starts_on else None
    except ValueError:
        raise AppError("Please give the date as YYYY-MM-DD.", code="validation_error") from None
    try:
        value = float(threshold) if threshold.strip() else default
    except ValueError:
        raise AppError("The match threshold is a number such as 0.48.", code="validation_error") from None
    if not 0 < value < 1:
        raise AppError("The match threshold is between 0 and 1.", code="validation_error")
    return day, value


# --- photos ------------------------------------------------------------------------------

@router.get("/dashboard/events/{event_id}", response_class=HTMLResponse)
def event_page(event_id: str, request: Request, uow: UoW, who: SignedInDep) -> HTMLResponse:
    event = access.get_event(uow, who.caller, event_id)
    return _event_page("dashboard/event.html", who, event, "overview", request,
                       stats=asdict(event_service.event_stats(uow, event.id)),
                       failed=photo_service.failed_photos(uow, event.id),
                       rejected=chunked_uploads.recent_rejections(uow, event.id))


@router.get("/dashboard/events/{event_id}/stats")
def event_stats(event_id: str, uow: UoW, who: SignedInDep) -> JSONResponse:
    """The live counts the event page polls (same fields as the API's `stats`)."""
    event = access.get_event(uow, who.caller, event_id)
    return JSONResponse(asdict(event_service.event_stats(uow, event.id)), headers={"Cache-Control": "no-store"})


@router.post("/dashboard/events/{event_id}/photos")
async def upload_without_script(event_id: str, request: Request, uow: UoW, open_uow: UowFactory,
                                settings: SettingsDep, store: StoreDep, who: SignedInDep) -> Response:
    """The upload form without script: one request, through the same Uploader as the API, its
    body streamed into staging as the API's is; the form's token is checked before any file."""
    event = await run_in_threadpool(access.get_event, uow, who.caller, event_id)
    uploader = Uploader(open_uow, store, settings.data_dir / "tmp", upload_limits(settings), event.id,
                        photos_per_task=settings.photos_per_task)
    header_token = request.headers.get("x-csrf-token")
    files = await upload_body.read_files(
        request.headers.get("content-type", ""), request.stream(), uploader.new_file,
        max_files=settings.max_files_per_request,
        check_fields=lambda fields: check_csrf(who, header_token or fields.get("csrf_token")))
    for staged in [staged for name, staged in files if not name and not staged.size]:
        staged.discard()  # the file input's part when no file was chosen
    files = [(name, staged) for name, staged in files if name or staged.size]
    await run_in_threadpool(uploader.add_all_staged, files)
    report = {"photos": [asdict(p) for p in uploader.report.photos],
              "rejected": [asdict(r) for r in uploader.report.rejected]}
    await run_in_threadpool(chunked_uploads.record_report, uow, event.id, f"{len(files)} files", 0, report)
    return _back(event.id)


@router.post("/dashboard/events/{event_id}/photos/{photo_id}/retry")
def retry_photo(event_id: str, photo_id: str, uow: UoW, who: PostDep) -> Response:
    event = access.get_event(uow, who.caller, event_id)
    photo = access.get_photo(uow, who.caller, photo_id)
    if photo.event_id != event.id:
        raise NotFound(f"No photo with id {photo_id!r}.", code="photo_not_found")
    if photo.status == "failed":  # a double click, or a retry that already ran, is not an error here
        photo_service.retry_photo(uow, photo)
    return _back(event.id, done="retried")


# --- runners -----------------------------------------------------------------------------

@router.get("/dashboard/events/{event_id}/runners", response_class=HTMLResponse)
def runners_page(event_id: str, request: Request, uow: UoW, settings: SettingsDep, who: SignedInDep,
                 q: str = "", cursor: str | None = None) -> HTMLResponse:
    return _runners_page(request, uow, settings, who, access.get_event(uow, who.caller, event_id), q, cursor)


@router.post("/dashboard/events/{event_id}/start-list", response_class=HTMLResponse)
def import_start_list(event_id: str, request: Request, uow: UoW, settings: SettingsDep, who: PostDep,
                      file: Annotated[UploadFile | None, File()] = None) -> HTMLResponse:
    """The start list (CSV) through the same import as the API; the result, with each refused
    line and its reason, is shown on the runners page (importing the same file again only
    updates the same runners, so a refresh does no harm)."""
    event = access.get_event(uow, who.caller, event_id)
    data = file.file.read(start_list.MAX_BYTES + 1) if file is not None and file.filename else b""
    try:
        result, error = (start_list.import_start_list(uow, event.id, data), None) if data else (
            None, "Choose a CSV file with a header row holding at least `bib`.")
    except AppError as exc:  # the whole file refused: nothing was imported
        result, error = None, exc.detail
    return _runners_page(request, uow, settings, who, event, "", None, status=422 if error else 200,
                         import_result=result, import_error=error)


def _runners_page(request: Request, uow, settings: Settings, who, event, q: str, cursor: str | None,
                  status: int = 200, **context) -> HTMLResponse:
    runners, next_cursor = runner_service.list_runners(uow, event.id, q=q, limit=RUNNERS_PER_PAGE, cursor=cursor)
    counts = runner_service.match_counts(uow, [r.id for r in runners])
    rows = [{"runner": r, "matches": counts[r.id], "gallery_url": gallery_service.gallery_url(settings, r.id),
             "email_status": notify_service.last_email_status(uow, r.id)} for r in runners]
    return _event_page("dashboard/runners.html", who, event, "runners", request, rows=rows, q=q,
                       cursor=cursor, next_cursor=next_cursor, status_code=status, **context)


def _csv_cell(value: object) -> str:
    # a cell starting with = + - @ would run as a formula in a spreadsheet (CSV injection)
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/dashboard/events/{event_id}/runners.csv")
def runners_csv(event_id: str, uow: UoW, open_uow: UowFactory, settings: SettingsDep,
                who: SignedInDep) -> StreamingResponse:
    event = access.get_event(uow, who.caller, event_id)

    def lines():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["name", "email", "bib", "photos", "gallery_url", "enrolled_at"])
        cursor = None
        while True:  # page by page, so 50,000 runners never sit in memory at once
            # its own unit of work per page: the request's is closed once the response streams
            with open_uow() as page_uow:
                runners, cursor = runner_service.list_runners(page_uow, event.id, q=None, limit=1000, cursor=cursor)
                counts = runner_service.match_counts(page_uow, [r.id for r in runners])
            for r in runners:
                writer.writerow([_csv_cell(v) for v in (r.name, r.email, r.bib, counts[r.id],
                                                        gallery_service.gallery_url(settings, r.id),
                                                        r.created_at.isoformat())])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if cursor is None:
                return

    filename = f"{event.slug}-runners.csv"
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "private, no-store"})


@router.post("/dashboard/events/{event_id}/runners/{runner_id}/notify")
def resend_email(event_id: str, runner_id: str, uow: UoW, who: PostDep) -> Response:
    runner = _runner_of(uow, who, event_id, runner_id)
    queued = notify_service.notify_runner(uow, runner.id)
    return _back(event_id, "/runners", "notified" if queued else "nothing")


@router.post("/dashboard/events/{event_id}/runners/{runner_id}/delete")
def delete_runner(event_id: str, runner_id: str, uow: UoW, store: StoreDep, who: PostDep) -> Response:
    runner = _runner_of(uow, who, event_id, runner_id)
    runner_service.delete_runner(uow, store, runner.id)
    return _back(event_id, "/runners", "deleted")


def _runner_of(uow, who, event_id: str, runner_id: str):
    event = access.get_event(uow, who.caller, event_id)
    runner = access.get_runner(uow, who.caller, runner_id)
    if runner.event_id != event.id:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")
    return runner


# --- sending -----------------------------------------------------------------------------

def _selfie_url(settings: Settings, slug: str) -> str:
    return f"{settings.public_base_url}/e/{slug}"


@router.get("/dashboard/events/{event_id}/send", response_class=HTMLResponse)
def send_page(event_id: str, request: Request, uow: UoW, settings: SettingsDep, who: SignedInDep) -> HTMLResponse:
    event = access.get_event(uow, who.caller, event_id)
    preview = notify_service.preview_event(uow, event.id)
    sample = None
    if preview.sample_runner_id:
        message = notify_service.sample_email(uow, settings, preview.sample_runner_id)
        sample = {"to": message["To"], "subject": message["Subject"], "runner_id": preview.sample_runner_id,
                  "text": message.get_body(("plain",)).get_content()}
    selfie_url = _selfie_url(settings, event.slug)
    qr = segno.make(selfie_url, error="m").svg_inline(scale=4, border=2, omitsize=True, svgclass="qr-svg")
    return _event_page("dashboard/send.html", who, event, "send", request, preview=preview, sample=sample,
                       selfie_url=selfie_url, qr_svg=qr)


@router.get("/dashboard/events/{event_id}/send/sample.html", response_class=HTMLResponse)
def email_sample(event_id: str, uow: UoW, settings: SettingsDep, store: StoreDep, who: SignedInDep,
                 runner: str = "") -> HTMLResponse:
    """The HTML part of a runner's sample e-mail, thumbnails included, for the send page's frame.
    Its inline styles need a policy of its own; links open outside the frame (a new tab)."""
    message = notify_service.sample_email(uow, settings, _runner_of(uow, who, event_id, runner).id, store)
    html = email_service.browser_html(message).replace("<head>", '<head><base target="_blank">', 1)
    return HTMLResponse(html, headers={**PRIVATE_HEADERS, "Content-Security-Policy": EMAIL_SAMPLE_POLICY,
                                       "X-Frame-Options": "SAMEORIGIN"})


@router.post("/dashboard/events/{event_id}/send")
def send_emails(event_id: str, uow: UoW, who: PostDep) -> Response:
    event = access.get_event(uow, who.caller, event_id)
    queued = notify_service.notify_event(uow, event.id)
    return RedirectResponse(f"/dashboard/events/{event.id}/send?done=sent&n={queued}", status_code=303)


@router.get("/dashboard/events/{event_id}/qr.svg")
def qr_svg(event_id: str, uow: UoW, settings: SettingsDep, who: SignedInDep) -> Response:
    event = access.get_event(uow, who.caller, event_id)
    out = io.BytesIO()
    segno.make(_selfie_url(settings, event.slug), error="m").save(out, kind="svg", scale=10, border=4,
                                                                  title=f"Selfie page of {event.name}")
    return Response(out.getvalue(), media_type="image/svg+xml",
                    headers={"Content-Disposition": f'attachment; filename="{event.slug}-qr.svg"'})


# --- settings ----------------------------------------------------------------------------

def _settings_page(request: Request, who, event, settings: Settings, status: int = 200,
                   error: str | None = None) -> HTMLResponse:
    response = _event_page("dashboard/settings.html", who, event, "settings", request, error=error,
                           default_threshold=settings.default_match_threshold,
                           default_colour=branding.DEFAULT_COLOUR,
                           default_retention=branding.DEFAULT_RETENTION)
    response.status_code = status
    return response


@router.get("/dashboard/events/{event_id}/settings", response_class=HTMLResponse)
def settings_page(event_id: str, request: Request, uow: UoW, settings: SettingsDep, who: SignedInDep) -> HTMLResponse:
    return _settings_page(request, who, access.get_event(uow, who.caller, event_id), settings)


@router.post("/dashboard/events/{event_id}/settings")
def save_settings(event_id: str, request: Request, uow: UoW, settings: SettingsDep, store: StoreDep, who: PostDep,
                  name: Annotated[str, Form()] = "", starts_on: Annotated[str, Form()] = "",
                  match_threshold: Annotated[str, Form()] = "", brand_colour: Annotated[str, Form()] = "",
                  privacy_controller: Annotated[str, Form()] = "", privacy_retention: Annotated[str, Form()] = "",
                  remove_logo: Annotated[str, Form()] = "",
                  logo: Annotated[UploadFile | None, File()] = None) -> Response:
    access.require_organiser(who.caller)
    event = access.get_event(uow, who.caller, event_id)
    try:
        day, threshold = _parse_event_fields(name, starts_on, match_threshold, event.match_threshold)
        colour = brand_colour if brand_colour and brand_colour.lower() != branding.DEFAULT_COLOUR else None
        branding.update_branding(event, colour=colour, privacy_controller=privacy_controller,
                                 privacy_retention=privacy_retention)
        if logo is not None and logo.filename:
            branding.set_logo(uow, store, event, logo.file.read(branding.LOGO_MAX_BYTES + 1))
        elif remove_logo:
            branding.remove_logo(uow, store, event)
        event = matching_service.update_event(uow, event.id, name=name.strip(), starts_on=day,
                                              match_threshold=threshold)
    except AppError as exc:
        uow.session.rollback()
        event = access.get_event(uow, who.caller, event_id)
        return _settings_page(request, who, event, settings, 422, exc.detail)
    return _back(event.id, "/settings", "rematching" if event.rematch_done < event.rematch_total else "saved")


@router.post("/dashboard/events/{event_id}/delete")
def delete_event(event_id: str, uow: UoW, store: StoreDep, who: PostDep) -> Response:
    access.require_organiser(who.caller)
    event_service.delete_event(uow, store, access.get_event(uow, who.caller, event_id))
    return RedirectResponse("/dashboard?done=event_deleted", status_code=303)
