"""Notify: which runners get an e-mail about which photos, and sending each e-mail exactly once.

1. `notify_event` / `notify_runner` (a request) create one Delivery per runner, status `queued`,
   listing the runner's matched photos not yet delivered and not in an open delivery (queued,
   sending, uncertain); SEND_RUNNER_EMAIL(delivery_id) is sent after commit. Nothing new: no row.
2. `send_delivery` (a worker) does, in this order:
   a. preflight: return early unless the delivery is still queued; read what the message needs
      (runner, event name, photo count, a few thumbnails);
   b. build the message (deterministic Message-ID). One that cannot be built fails the delivery
      here, visibly, before anything is claimed;
   c. connect and log in to SMTP. Nothing is claimed yet, so "server down" leaves it queued;
   d. claim it: queued -> sending, stamped with the task id and time, in one short transaction that
      holds the runner's row lock and re-checks the photos (unsubscribed, data deleted, "not me",
      or already claimed by a racing delivery for the same runner). Nothing left -> cancelled;
      fewer photos -> the message is built again for those;
   e. transfer it: MAIL, RCPT, DATA;
   f. record: sent + one DeliveredPhoto per photo, in one transaction.
   The server refusing or being unreachable (`NotSent`) puts it back to queued, with `queued_at`
   set to now, and the task retries with backoff; on the last try it becomes failed, with the
   error, and its photos may be re-notified.

The remaining window is between the commit of (d) and the commit of (f): a few milliseconds of
DATA exchange plus one small commit. If the worker dies there (or the connection drops during DATA,
`MaybeSent`), we cannot know whether the server accepted the message. We choose never to resend
automatically: the task's redelivery (same task id) or the sweeper (claim older than stale_after)
marks the delivery `uncertain`, and its photos are not offered again. That trades a rare lost e-mail
(the runner still sees every photo through the gallery link of any later e-mail) for never a
duplicate. Uncertain deliveries are counted in the event stats, so an organiser can see them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import DeliveredPhoto, Delivery, Event, Match, MatchRejection, Photo, PhotoStatus, Runner, utcnow
from app.db.delivery import DeliveryStatus
from app.db.session import UnitOfWork, unit_of_work
from app.errors import NotFound
from app.services import events as event_service
from app.services import gallery as gallery_service
from app.services.email import (
    MAX_THUMBNAILS,
    MaybeSent,
    NotSent,
    RunnerEmail,
    Thumbnail,
    build_message,
    message_id_for,
    open_mailer,
)
from app.services.tokens import make_token
from app.storage import PhotoStore
from app.jobs import SEND_RUNNER_EMAIL

log = logging.getLogger(__name__)
S = DeliveryStatus
# Photos in these deliveries are not offered to a new one: they are on their way, or may have arrived.
OPEN = (S.queued.value, S.sending.value, S.uncertain.value)


# --- links -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunnerLinks:
    gallery: str
    delete: str
    unsubscribe: str


def runner_links(settings: Settings, runner_id: str) -> RunnerLinks:
    """The links of a runner's e-mail; gallery and delete pages are app/pages/gallery.py's."""
    token = make_token(settings.signing_keys, "unsubscribe", runner_id)
    return RunnerLinks(
        gallery=gallery_service.gallery_url(settings, runner_id),
        delete=gallery_service.delete_url(settings, runner_id),
        unsubscribe=f"{settings.public_base_url}/u/{token}",
    )


# --- which photos are new ---------------------------------------------------------------------

def _unannounced(uow: UnitOfWork, runners: ColumnElement[bool], *, blocking: tuple[str, ...],
                 skip_delivery: str | None = None) -> dict[str, list[str]]:
    """Per subscribed runner matching `runners`: matched photos (best first) that no delivery in a
    `blocking` status announces and that were never delivered. Runners with none are left out."""
    session = uow.session
    matched = session.execute(
        select(Match.runner_id, Match.photo_id)
        .join(Runner, Runner.id == Match.runner_id).join(Photo, Photo.id == Match.photo_id)
        .where(runners, Runner.unsubscribed_at.is_(None), Runner.email.is_not(None),  # start list: no e-mail
               Photo.status == PhotoStatus.done.value)
        .order_by(Match.runner_id, Match.similarity.desc().nulls_last(), Match.photo_id)
    ).all()
    if not matched:
        return {}
    taken = set(session.execute(
        select(DeliveredPhoto.runner_id, DeliveredPhoto.photo_id)
        .join(Runner, Runner.id == DeliveredPhoto.runner_id).where(runners)
    ).all())
    taken |= set(session.execute(
        select(MatchRejection.runner_id, MatchRejection.photo_id)
        .join(Runner, Runner.id == MatchRejection.runner_id).where(runners)
    ).all())
    pending = select(Delivery.runner_id, Delivery.photo_ids).join(Runner, Runner.id == Delivery.runner_id)
    pending = pending.where(runners, Delivery.status.in_(blocking))
    if skip_delivery:
        pending = pending.where(Delivery.id != skip_delivery)
    for runner_id, photo_ids in session.execute(pending):
        taken.update((runner_id, photo_id) for photo_id in photo_ids)

    new: dict[str, list[str]] = {}
    for runner_id, photo_id in matched:
        if (runner_id, photo_id) not in taken:
            new.setdefault(runner_id, []).append(photo_id)
    return new


# --- requests ---------------------------------------------------------------------------------

def _queue(uow: UnitOfWork, new: dict[str, list[str]], event_id: str) -> int:
    for runner_id, photo_ids in new.items():
        delivery = Delivery(event_id=event_id, runner_id=runner_id, photo_ids=photo_ids,
                            status=S.queued.value)
        uow.session.add(delivery)
        uow.session.flush()
        uow.send_task(SEND_RUNNER_EMAIL, delivery.id)
    return len(new)


def notify_event(uow: UnitOfWork, event_id: str) -> int:
    """Queue one e-mail per runner of the event with photos not yet e-mailed; returns how many."""
    event_service.get_event(uow, event_id)
    return _queue(uow, _unannounced(uow, Runner.event_id == event_id, blocking=OPEN), event_id)


def notify_runner(uow: UnitOfWork, runner_id: str) -> int:
    """Queue an e-mail for one runner if they have photos not yet e-mailed; returns 0 or 1."""
    runner = uow.session.get(Runner, runner_id)
    if runner is None:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")
    return _queue(uow, _unannounced(uow, Runner.id == runner_id, blocking=OPEN), runner.event_id)


def unsubscribe(uow: UnitOfWork, runner_id: str) -> None:
    """Idempotent. A runner whose data is already deleted has nothing left to unsubscribe."""
    runner = uow.session.get(Runner, runner_id)
    if runner is not None and runner.unsubscribed_at is None:
        runner.unsubscribed_at = utcnow()


def last_email_status(uow: UnitOfWork, runner_id: str) -> str | None:
    """The status of the runner's latest e-mail (queued, sending, sent, failed, uncertain...), if any."""
    return uow.session.scalar(
        select(Delivery.status).where(Delivery.runner_id == runner_id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(1)
    )


# --- the worker -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Preflight:
    runner_id: str
    photo_ids: list[str]
    total_photos: int
    runner_name: str
    runner_email: str
    event_name: str
    thumb_keys: dict[str, str]  # of the first photos; a thumbnail is never worth a longer window


@dataclass(frozen=True)
class _Claim:
    photo_ids: list[str]
    total_photos: int


def _preflight(uow: UnitOfWork, delivery_id: str, *, task_id: str, stale_after: timedelta) -> _Preflight | str:
    """What to read before claiming (all the message needs), or the outcome when there is nothing to do."""
    delivery = uow.session.get(Delivery, delivery_id)
    if delivery is None:
        return "gone"  # the runner's data was deleted
    if delivery.status == S.sending.value:
        ours = delivery.claimed_by == task_id  # our own redelivery: the worker died mid-send
        if ours or delivery.claimed_at < utcnow() - stale_after:
            _mark_uncertain(delivery, "the worker stopped while sending; it may have been delivered, "
                                      "so it is not resent automatically")
            return S.uncertain.value
        return "in_progress"  # another worker is sending it right now
    if delivery.status != S.queued.value:
        return delivery.status
    runner = uow.session.get(Runner, delivery.runner_id)
    return _Preflight(delivery.runner_id, list(delivery.photo_ids), _total_photos(uow, runner.id),
                      runner.name, runner.email, uow.session.get(Event, delivery.event_id).name,
                      _thumbnail_keys(uow, delivery.photo_ids))


def _thumbnail_keys(uow: UnitOfWork, photo_ids: list[str]) -> dict[str, str]:
    """Photo id -> thumbnail key, of the first photos of a message (those it embeds)."""
    return dict(uow.session.execute(
        select(Photo.id, Photo.thumb_key)
        .where(Photo.id.in_(photo_ids[:MAX_THUMBNAILS]), Photo.thumb_key.is_not(None))
    ).all())


def _total_photos(uow: UnitOfWork, runner_id: str) -> int:
    return uow.session.scalar(select(func.count()).select_from(Match).where(Match.runner_id == runner_id)) or 0


def _read_thumbnails(store: PhotoStore, keys: dict[str, str]) -> dict[str, bytes]:
    thumbs = {}
    for photo_id, key in keys.items():
        try:
            with store.open(key) as f:
                thumbs[photo_id] = f.read()
        except FileNotFoundError:
            log.warning("thumbnail %s is missing; the e-mail goes without it", key)
    return thumbs


def _claim(uow: UnitOfWork, delivery_id: str, *, task_id: str, message_id: str) -> _Claim | str:
    """queued -> sending; or the outcome when another task took it first, or nothing is left to send."""
    session = uow.session
    # Locks in one order everywhere: event, runner, delivery (review C5). An erasure locks the
    # runner, then its deliveries through the cascade, so on PostgreSQL the runner is locked first
    # here too (FOR NO KEY UPDATE: no conflict with the KEY SHARE locks that inserting matches and
    # deliveries take). It serialises claims per runner, so two deliveries created by racing notify
    # calls never both announce the same photo. On SQLite the conditional UPDATE comes first: it
    # takes the database's write lock, which serialises everything, before anything is read.
    if session.get_bind().dialect.name != "sqlite":
        runner_id = session.scalar(select(Delivery.runner_id).where(Delivery.id == delivery_id))
        if runner_id is None or session.scalar(
                select(Runner.id).where(Runner.id == runner_id).with_for_update(key_share=True)) is None:
            return "skipped"  # erased meanwhile: the cascade took the delivery too
    taken = session.execute(
        update(Delivery).where(Delivery.id == delivery_id, Delivery.status == S.queued.value)
        .values(status=S.sending.value, claimed_by=task_id, claimed_at=utcnow(),
                attempts=Delivery.attempts + 1, message_id=message_id)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        return "skipped"
    delivery = session.get(Delivery, delivery_id, populate_existing=True)
    runner = session.get(Runner, delivery.runner_id)
    still_new = set(_unannounced(uow, Runner.id == runner.id, skip_delivery=delivery.id,
                                 blocking=(S.sending.value, S.uncertain.value)).get(runner.id, []))
    delivery.photo_ids = [p for p in delivery.photo_ids if p in still_new]
    if not delivery.photo_ids:
        delivery.status = S.cancelled.value
        delivery.error = "nothing left to announce (unsubscribed, data deleted, or already e-mailed)"
        return S.cancelled.value
    return _Claim(list(delivery.photo_ids), _total_photos(uow, runner.id))


def _mark_uncertain(delivery: Delivery, error: str) -> None:
    delivery.status = S.uncertain.value
    delivery.error = error


def _record_sent(uow: UnitOfWork, delivery_id: str) -> None:
    """The server accepted the message: whatever the row says now (a sweeper may have judged it
    uncertain during a very slow send), this is the truth."""
    delivery = uow.session.get(Delivery, delivery_id)
    if delivery is None:
        return  # deleted meanwhile, with the runner's data
    delivery.status, delivery.sent_at, delivery.error = S.sent.value, utcnow(), None
    already = set(uow.session.scalars(
        select(DeliveredPhoto.photo_id).where(DeliveredPhoto.runner_id == delivery.runner_id)
    ))
    uow.session.add_all(
        DeliveredPhoto(delivery_id=delivery.id, runner_id=delivery.runner_id, photo_id=photo_id)
        for photo_id in delivery.photo_ids if photo_id not in already
    )


def _record_not_sent(uow: UnitOfWork, delivery_id: str, *, task_id: str, error: str, final: bool) -> None:
    """Back to queued for the next try, or failed; only if it is still queued or our claim."""
    uow.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id,
               or_(Delivery.status == S.queued.value,
                   and_(Delivery.status == S.sending.value, Delivery.claimed_by == task_id)))
        .values(status=S.failed.value if final else S.queued.value, error=error[:2000],
                # the next try starts now: the sweeper measures "lost" from here, so a delivery
                # waiting in its retry backoff is never taken for a lost message (no second chain)
                queued_at=utcnow(),
                # a claimed try was counted by the claim; one that never connected is counted here
                attempts=Delivery.attempts + case((Delivery.status == S.queued.value, 1), else_=0))
        .execution_options(synchronize_session=False)
    )


def _with_db_retries(make_session: sessionmaker[Session], work: Callable[[UnitOfWork], None]) -> None:
    """For the commit after the server accepted: if it failed, the redelivered task could only judge
    the delivery uncertain, so a short database outage is worth waiting out here."""
    for attempt in range(5):
        try:
            with unit_of_work(make_session) as uow:
                work(uow)
            return
        except OperationalError:
            if attempt == 4:
                raise
            log.warning("database unavailable while recording a sent e-mail; retrying")
            time.sleep(2 ** attempt)


def send_delivery(settings: Settings, make_session: sessionmaker[Session], store: PhotoStore,
                  delivery_id: str, *, task_id: str, last_try: bool) -> str:
    """Send one queued delivery; returns the outcome. Raises NotSent when a retry may succeed."""
    stale_after = timedelta(seconds=settings.stale_after_s)
    with unit_of_work(make_session) as uow:
        preflight = _preflight(uow, delivery_id, task_id=task_id, stale_after=stale_after)
    if isinstance(preflight, str):
        return preflight
    thumbnails = _read_thumbnails(store, preflight.thumb_keys)
    links = runner_links(settings, preflight.runner_id)
    message_id = message_id_for(delivery_id, settings)

    def compose(photo_ids: list[str], total_photos: int) -> EmailMessage:
        """Any error building the message is permanent: the same data would fail the same way."""
        try:
            return build_message(RunnerEmail(
                runner_name=preflight.runner_name, runner_email=preflight.runner_email,
                event_name=preflight.event_name, new_photos=len(photo_ids), total_photos=total_photos,
                thumbnails=[Thumbnail(p, thumbnails[p]) for p in photo_ids if p in thumbnails],
                gallery_url=links.gallery, delete_url=links.delete, unsubscribe_url=links.unsubscribe,
                message_id=message_id,
            ), sender=settings.smtp_from)
        except Exception as exc:
            raise NotSent(f"the message could not be built: {exc!r}", permanent=True) from exc

    try:
        # Built before the claim: a message that cannot be built (e.g. a name the mail library
        # refuses) fails this delivery visibly instead of stranding it in `sending`.
        message = compose(preflight.photo_ids, preflight.total_photos)
        with open_mailer(settings) as mailer:
            with unit_of_work(make_session) as uow:
                claim = _claim(uow, delivery_id, task_id=task_id, message_id=message_id)
            if isinstance(claim, str):
                return claim
            if (claim.photo_ids, claim.total_photos) != (preflight.photo_ids, preflight.total_photos):
                message = compose(claim.photo_ids, claim.total_photos)  # the claim dropped some photos
            try:
                where = mailer.send(message, name=delivery_id)
            except MaybeSent as exc:
                with unit_of_work(make_session) as uow:
                    delivery = uow.session.get(Delivery, delivery_id)
                    if delivery is not None:
                        _mark_uncertain(delivery, str(exc))
                log.error("delivery %s is uncertain: %s", delivery_id, exc)
                return S.uncertain.value
    except NotSent as exc:
        final = last_try or exc.permanent
        with unit_of_work(make_session) as uow:
            _record_not_sent(uow, delivery_id, task_id=task_id, error=str(exc), final=final)
        if final:
            log.error("delivery %s failed: %s", delivery_id, exc)
            return S.failed.value
        raise
    _with_db_retries(make_session, lambda uow: _record_sent(uow, delivery_id))
    log.info("delivery %s sent via %s", delivery_id, where)  # ids only: logs outlive an erasure
    return S.sent.value


@dataclass(frozen=True)
class SweepResult:
    requeued: list[str]
    uncertain: list[str]


def sweep_stale_deliveries(uow: UnitOfWork, *, stale_after: timedelta, limit: int = 500) -> SweepResult:
    """For the periodic sweeper: re-send queued deliveries whose task message was lost, and settle
    claims whose worker died mid-send as uncertain (never resent; see the module docstring).

    Every failed try sets `queued_at` to its time and retries run at most `retry_backoff_max`
    (300 s) apart, less than stale_after, so a delivery waiting for its next retry is not
    mistaken for a lost one (which would start a second retry chain beside the first).
    """
    cutoff = utcnow() - stale_after
    lost = list(uow.session.scalars(
        select(Delivery.id).where(
            Delivery.status == S.queued.value, Delivery.queued_at < cutoff,
            or_(Delivery.claimed_at.is_(None), Delivery.claimed_at < cutoff),
        ).order_by(Delivery.queued_at).limit(limit)
    ))
    if lost:
        uow.session.execute(update(Delivery).where(Delivery.id.in_(lost)).values(queued_at=utcnow())
                            .execution_options(synchronize_session=False))
        for delivery_id in lost:
            uow.send_task(SEND_RUNNER_EMAIL, delivery_id)
    stuck = list(uow.session.scalars(
        select(Delivery).where(Delivery.status == S.sending.value, Delivery.claimed_at < cutoff).limit(limit)
    ))
    for delivery in stuck:
        _mark_uncertain(delivery, "the worker stopped while sending; it may have been delivered, "
                                  "so it is not resent automatically")
    return SweepResult(lost, [d.id for d in stuck])


@dataclass(frozen=True)
class SendPreview:
    messages: int  # e-mails `notify_event` would queue now
    photos: int  # new photos they announce in all
    sample_runner_id: str | None  # whose e-mail the dashboard renders as a sample


def preview_event(uow: UnitOfWork, event_id: str) -> SendPreview:
    new = _unannounced(uow, Runner.event_id == event_id, blocking=OPEN)
    sample = max(new, key=lambda runner_id: len(new[runner_id])) if new else None
    return SendPreview(len(new), sum(len(ids) for ids in new.values()), sample)


def sample_email(uow: UnitOfWork, settings: Settings, runner_id: str,
                 store: PhotoStore | None = None) -> EmailMessage:
    """The e-mail this runner would get now (or a reminder of all their photos), not sent; with
    `store`, with the thumbnails the real one embeds."""
    runner = uow.session.get(Runner, runner_id)
    if runner is None:
        raise NotFound(f"No runner with id {runner_id!r}.", code="runner_not_found")
    event = event_service.get_event(uow, runner.event_id)
    new = _unannounced(uow, Runner.id == runner_id, blocking=OPEN).get(runner_id, [])
    total = _total_photos(uow, runner_id)
    links = runner_links(settings, runner_id)
    thumbs = _read_thumbnails(store, _thumbnail_keys(uow, new)) if store is not None else {}
    return build_message(RunnerEmail(
        runner_name=runner.name, runner_email=runner.email, event_name=event.name,
        new_photos=len(new) or total, total_photos=total,
        thumbnails=[Thumbnail(p, thumbs[p]) for p in new if p in thumbs], gallery_url=links.gallery,
        delete_url=links.delete, unsubscribe_url=links.unsubscribe, message_id="<sample@finishline.invalid>",
    ), sender=settings.smtp_from)
