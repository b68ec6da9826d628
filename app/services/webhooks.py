"""Webhooks: organisations subscribe a URL to event types; the workers POST each event, signed.

1. Endpoints (`create_endpoint`, `list_endpoints`, `delete_endpoint`) belong to an organisation.
   A URL whose host resolves to a loopback or private address is refused (setting
   `webhook_allow_private` lifts that), here and again before every send (DNS rebinding).
2. Emitting: the service that changed something notes it (`runners_matched`,
   `photos_finished`); just before its transaction commits, one WebhookEvent per subscribed
   endpoint is written with the exact JSON body `{"id", "type", "created_at", "data"}`, and
   DELIVER_WEBHOOK(event id) is sent once it has committed. `id` never changes: receivers
   de-duplicate on it.
3. Sending (`deliver`, a worker): claim the next attempt, check the address, POST the body with
   `Finishline-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, record the answer
   as a WebhookDelivery row. 2xx: delivered, never sent again. Anything else: `NotDelivered`,
   and the task retries with backoff; after the last try the event is `failed`. The sweeper
   re-sends events whose message was lost.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Caller
from app.db import (Event, Match, Photo, PhotoStatus, Runner, WebhookDelivery, WebhookEndpoint, WebhookEvent,
                    WebhookEventStatus, new_id, utcnow)
from app.db.session import UnitOfWork, unit_of_work
from app.errors import Unprocessable
from app.services import access
from app.jobs import DELIVER_WEBHOOK

log = logging.getLogger(__name__)
EVENT_TYPES = ("runner.matched", "event.processed")
SIGNATURE_HEADER = "Finishline-Signature"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MAX_MATCHES_IN_BODY = 1000  # a runner with more: the first ones, best first; GET .../matches pages the rest


class NotDelivered(Exception):
    """The receiver did not answer 2xx (or could not be reached); the task retries."""


# --- addresses -------------------------------------------------------------------------------

def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_safely(url: str, *, allow_private: bool) -> str:
    """The address to connect to for `url`'s host: 422 `invalid_url` / `unsafe_url` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unprocessable("url: must be an http:// or https:// URL with a host", code="invalid_url")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unprocessable(f"url: the host {parts.hostname!r} does not resolve", code="invalid_url") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    unsafe = [a for a in addresses if not _public(a)]
    if unsafe and not allow_private:
        raise Unprocessable(f"url: the host resolves to a private or loopback address ({unsafe[0]})",
                            code="unsafe_url")
    return addresses[0]


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict]:
    """`url` with its host replaced by the checked address (so a second DNS answer cannot
    differ), plus the Host header and TLS server name of the original host."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc.rsplit("@", 1)[-1]}, extensions


# --- endpoints -------------------------------------------------------------------------------

def create_endpoint(uow: UnitOfWork, caller: Caller, *, url: str, events: list[str],
                    allow_private: bool) -> WebhookEndpoint:
    access.require_organiser(caller)
    resolve_safely(url, allow_private=allow_private)
    endpoint = WebhookEndpoint(organisation_id=caller.organisation_id, url=url, events=list(dict.fromkeys(events)),
                               secret="whsec_" + secrets.token_urlsafe(32))
    uow.session.add(endpoint)
    uow.session.flush()
    return endpoint


def list_endpoints(uow: UnitOfWork, caller: Caller) -> list[WebhookEndpoint]:
    access.require_organiser(caller)
    return list(uow.session.scalars(access.readable_webhooks(caller).order_by(WebhookEndpoint.id.desc())))


def delete_endpoint(uow: UnitOfWork, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its events and deliveries (cascade); a queued send finds nothing."""
    uow.session.delete(endpoint)


# --- emitting --------------------------------------------------------------------------------

def _subscribers(uow: UnitOfWork, organisation_id: str, type_: str) -> list[WebhookEndpoint]:
    return [e for e in uow.session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.organisation_id == organisation_id)) if type_ in e.events]


def _emit(uow: UnitOfWork, endpoints: list[WebhookEndpoint], event_id: str | None, type_: str, data: dict) -> None:
    for endpoint in endpoints:
        row_id = new_id()
        body = json.dumps({"id": f"evt_{row_id}", "type": type_, "created_at": utcnow().isoformat(), "data": data},
                          separators=(",", ":"))
        uow.session.add(WebhookEvent(id=row_id, endpoint_id=endpoint.id, event_id=event_id, type=type_, body=body))
        if uow.sender is not None:  # without one (a script), the sweeper sends it
            uow.send_task(DELIVER_WEBHOOK, row_id)


def runners_matched(uow: UnitOfWork, runner_ids: set[str] | list[str]) -> None:
    """These runners' matching finished or their matches changed: `runner.matched` for each,
    with the matches as they are when the transaction commits."""
    uow.collect("webhooks.runner.matched", lambda ids: _emit_runners_matched(uow, ids)).update(runner_ids)


def _emit_runners_matched(uow: UnitOfWork, runner_ids: set[str]) -> None:
    uow.session.flush()
    rows = uow.session.execute(
        select(Runner.id, Runner.event_id, Event.organisation_id).join(Event, Event.id == Runner.event_id)
        .where(Runner.id.in_(runner_ids)).order_by(Runner.id)).all()  # deleted runners are gone: nothing to say
    subscribers: dict[str, list[WebhookEndpoint]] = {}
    for runner_id, event_id, organisation_id in rows:
        if organisation_id not in subscribers:
            subscribers[organisation_id] = _subscribers(uow, organisation_id, "runner.matched")
        if not subscribers[organisation_id]:
            continue  # nobody listens: no query for the matches
        matches = uow.session.execute(
            select(Match.photo_id, Match.face_id, Match.similarity).where(Match.runner_id == runner_id)
            .order_by(Match.similarity.desc(), Match.id).limit(MAX_MATCHES_IN_BODY)).all()
        data = {"runner_id": runner_id, "event_id": event_id,
                "matches": [{"photo_id": p, "face_id": f, "similarity": round(s, 4)} for p, f, s in matches]}
        _emit(uow, subscribers[organisation_id], event_id, "runner.matched", data)


def photos_finished(uow: UnitOfWork, event_id: str) -> None:
    """A photo of the event is done or failed: `event.processed` if none is pending or processing
    any more, once per time that becomes true. Call with the event locked (matching.lock_event),
    so two photos finishing together see each other's outcome."""
    session = uow.session
    session.flush()
    busy = session.scalar(select(func.count()).select_from(Photo).where(
        Photo.event_id == event_id, Photo.status.in_((PhotoStatus.pending.value, PhotoStatus.processing.value))))
    newest = session.scalar(select(func.max(Photo.id)).where(Photo.event_id == event_id))
    if busy or newest is None:
        return
    # Conditional update: only one transaction moves the marker to this photo, so only one emits.
    claimed = session.execute(
        update(Event).where(Event.id == event_id, (Event.processed_through.is_(None))
                            | (Event.processed_through < newest))
        .values(processed_through=newest).execution_options(synchronize_session=False)).rowcount
    if not claimed:
        return
    counts = dict(session.execute(select(Photo.status, func.count()).where(Photo.event_id == event_id)
                                  .group_by(Photo.status)).all())
    organisation_id = session.scalar(select(Event.organisation_id).where(Event.id == event_id))
    _emit(uow, _subscribers(uow, organisation_id, "event.processed"), event_id, "event.processed",
          {"event_id": event_id, "photos_done": counts.get(PhotoStatus.done.value, 0),
           "photos_failed": counts.get(PhotoStatus.failed.value, 0)})


# --- sending ---------------------------------------------------------------------------------

def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def deliver(make_session: sessionmaker[Session], webhook_event_id: str, *, allow_private: bool,
            last_try: bool, post: Callable[..., httpx.Response] | None = None) -> str:
    """One attempt at one event; returns the outcome. Raises NotDelivered to be retried."""
    with unit_of_work(make_session) as uow:
        event = uow.session.get(WebhookEvent, webhook_event_id)
        if event is None or event.status != WebhookEventStatus.pending.value:
            return "skipped"  # deleted meanwhile, or already delivered/failed: never twice
        endpoint = uow.session.get(WebhookEndpoint, event.endpoint_id)
        attempt = event.attempts + 1
        # Claim this attempt: a racing copy of the task (redelivery, sweeper) sees the count moved.
        if not uow.session.execute(
                update(WebhookEvent).where(WebhookEvent.id == event.id, WebhookEvent.attempts == event.attempts)
                .values(attempts=attempt, last_attempt_at=utcnow())
                .execution_options(synchronize_session=False)).rowcount:
            return "skipped"
        url, secret, body = endpoint.url, endpoint.secret, event.body.encode()

    status_code, answer, error, started = None, None, None, time.monotonic()
    try:
        target, headers, extensions = _pinned(url, resolve_safely(url, allow_private=allow_private))
        headers.update({"Content-Type": "application/json", "User-Agent": "Finishline-Webhooks/1",
                        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
                        "Finishline-Event-Id": f"evt_{webhook_event_id}"})
        response = (post or _post)(target, content=body, headers=headers, extensions=extensions)
        status_code, answer = response.status_code, response.text[:1024]
    except Unprocessable as exc:
        error = f"{exc.code}: {exc.detail}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
    succeeded = status_code is not None and 200 <= status_code < 300

    with unit_of_work(make_session) as uow:
        uow.session.add(WebhookDelivery(webhook_event_id=webhook_event_id, attempt=attempt, succeeded=succeeded,
                                        status_code=status_code, response_body=answer, error=error,
                                        duration_ms=int((time.monotonic() - started) * 1000)))
        if succeeded or last_try:
            uow.session.execute(update(WebhookEvent).where(WebhookEvent.id == webhook_event_id).values(
                status=(WebhookEventStatus.delivered if succeeded else WebhookEventStatus.failed).value))
    if succeeded:
        return "delivered"
    if last_try:
        log.warning("webhook event %s failed after %d attempts: %s", webhook_event_id, attempt,
                    error or status_code)
        return "failed"
    raise NotDelivered(error or f"answered {status_code}")


def _post(url: str, **kwargs) -> httpx.Response:
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
        return client.post(url, **kwargs)


def sweep_stale_events(uow: UnitOfWork, *, stale_after: timedelta, limit: int = 500) -> list[str]:
    """Re-send DELIVER_WEBHOOK for pending events nobody has tried for `stale_after` (a lost
    message or a dead worker); retries are at most 300 s apart, so a waiting retry is not stale."""
    cutoff = utcnow() - stale_after
    ids = list(uow.session.scalars(
        select(WebhookEvent.id).where(
            WebhookEvent.status == WebhookEventStatus.pending.value,
            func.coalesce(WebhookEvent.last_attempt_at, WebhookEvent.created_at) < cutoff)
        .order_by(WebhookEvent.created_at).limit(limit)))
    for event_id in ids:
        uow.send_task(DELIVER_WEBHOOK, event_id)
    return ids
