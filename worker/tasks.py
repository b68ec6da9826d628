"""Thin Celery tasks: take ids, call a service, let Celery retry transient errors.

Every task is safe to run twice (redelivery after a crash): services check state first.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.session import unit_of_work
from app.jobs import TaskSender
from app.services import chunked_uploads, matching
from app.services import notify as notify_service
from app.services import photos as photo_service
from app.services import privacy
from app.services import webhooks as webhook_service
from app.services.email import NotSent as EmailNotSent
from app.services.processing import ProcessingContext, process_photos
from app.services.uploads import upload_limits
from app.services.webhooks import NotDelivered as WebhookNotDelivered
from app.storage import PhotoStore
from worker.context import get_context
from worker.dispatch import (ASSEMBLE_UPLOAD, DELIVER_WEBHOOK, MATCH_RUNNER, PROCESS_PHOTO, REMATCH_EVENT,
                             SEND_RUNNER_EMAIL, SWEEP_STALE_WORK, CelerySender)

log = get_task_logger(__name__)
TRANSIENT = (DatabaseError, BrokerError, ConnectionError, TimeoutError)
logging.getLogger("PIL").setLevel(logging.INFO)


def _sender(task) -> CelerySender:
    return CelerySender(task.app)


@shared_task(bind=True, name=PROCESS_PHOTO, autoretry_for=TRANSIENT, retry_backoff=True,
             retry_backoff_max=300, max_retries=8)
def process_photo_task(self, photo_ids: str | list[str]) -> dict[str, str]:
    ids = [photo_ids] if isinstance(photo_ids, str) else list(photo_ids)
    ctx = get_context(self.app.finishline_settings)
    processing = ProcessingContext(ctx.settings, ctx.make_session, ctx.store, ctx.backend, _sender(self),
                                   bib_reader=ctx.bib_reader)
    outcomes = process_photos(processing, ids, task_id=self.request.id or "eager")
    log.info("processed %s", outcomes)
    return outcomes


@shared_task(bind=True, name=SWEEP_STALE_WORK)
def sweep_stale_work_task(self) -> int:
    ctx = get_context(self.app.finishline_settings)
    stale_after = timedelta(seconds=ctx.settings.stale_after_s)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        photos = photo_service.sweep_stale_photos(uow, stale_after=stale_after,
                                                  max_attempts=ctx.settings.photo_max_attempts,
                                                  backlog=_photo_queue_length(self.app) > 0)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        deliveries = notify_service.sweep_stale_deliveries(uow, stale_after=stale_after)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        runners = matching.sweep_unmatched_runners(uow, stale_after=stale_after)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        hooks = webhook_service.sweep_stale_events(uow, stale_after=stale_after)
    with unit_of_work(ctx.make_session) as uow:
        chunked_uploads.expire_abandoned(uow, ctx.store)  # dashboard uploads left for a week
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        uploads = chunked_uploads.sweep_stale_assemblies(uow)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        matching.sweep_unfinished_rematches(uow)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:
        purged = privacy.purge_expired_events(uow)
    if purged:
        log.warning("retention: face templates of events %s deleted", ", ".join(purged))
    if photos.requeued or photos.failed or deliveries.requeued or deliveries.uncertain or runners or hooks or uploads:
        log.warning("sweeper: re-queued %d photos, %d runners to match, %d e-mails, %d webhook events and "
                    "%d dashboard uploads to assemble; %d photos failed (attempts used up); %d e-mails uncertain",
                    len(photos.requeued), len(runners), len(deliveries.requeued), len(hooks), len(uploads),
                    len(photos.failed), len(deliveries.uncertain))
    return len(photos.requeued) + len(deliveries.requeued) + len(runners) + len(hooks) + len(uploads)


def _photo_queue_length(celery) -> int:
    """Messages waiting in the queue PROCESS_PHOTO is routed to; 0 when the broker cannot say."""
    queue = celery.amqp.router.route({}, PROCESS_PHOTO)["queue"]
    try:
        with celery.connection_for_read() as conn:
            # a plain (not passive) declare: Redis knows a queue only once something declared it
            return conn.default_channel.queue_declare(queue=queue.name, durable=queue.durable,
                                                      auto_delete=queue.auto_delete).message_count
    except Exception as exc:
        log.warning("sweeper: cannot read the photo queue's length (%r); treating it as empty", exc)
        return 0


# Retries at most 300 s apart (less than stale_after) and each failed try refreshes `queued_at`, so
# the sweeper never mistakes a delivery waiting for its next retry for a lost one; 10 retries span
# roughly half an hour of SMTP outage.
@shared_task(bind=True, name=SEND_RUNNER_EMAIL, autoretry_for=(EmailNotSent, *TRANSIENT), retry_backoff=True,
             retry_backoff_max=300, max_retries=10)
def send_runner_email_task(self, delivery_id: str) -> str:
    ctx = get_context(self.app.finishline_settings)
    outcome = notify_service.send_delivery(
        ctx.settings, ctx.make_session, ctx.store, delivery_id,
        task_id=self.request.id or "eager", last_try=self.request.retries >= self.max_retries,
    )
    log.info("delivery %s: %s", delivery_id, outcome)
    return outcome


# Retries back off up to 300 s apart (under stale_after, so the sweeper leaves a waiting retry
# alone); 10 retries span about half an hour of a receiver being down.
@shared_task(bind=True, name=DELIVER_WEBHOOK, autoretry_for=(WebhookNotDelivered, *TRANSIENT), retry_backoff=True,
             retry_backoff_max=300, max_retries=10)
def deliver_webhook_task(self, webhook_event_id: str) -> str:
    ctx = get_context(self.app.finishline_settings)
    outcome = webhook_service.deliver(ctx.make_session, webhook_event_id,
                                      allow_private=ctx.settings.webhook_allow_private,
                                      last_try=self.request.retries >= self.max_retries)
    log.info("webhook event %s: %s", webhook_event_id, outcome)
    return outcome


@shared_task(bind=True, name=ASSEMBLE_UPLOAD, autoretry_for=TRANSIENT, retry_backoff=True,
             retry_backoff_max=300, max_retries=8)
def assemble_upload_task(self, upload_id: str, event_id: str) -> int:
    """A finished dashboard upload through the Uploader: its zip is staged and expanded here."""
    ctx = get_context(self.app.finishline_settings)
    report = run_assembly(ctx.settings, ctx.make_session, ctx.store, _sender(self), upload_id, event_id)
    if report is None:
        log.info("upload %s: nothing assembled (done already, deleted, or this try failed)", upload_id)
        return 0
    log.info("upload %s: %d photos, %d rejected", upload_id, len(report["photos"]), len(report["rejected"]))
    return len(report["photos"])


def run_assembly(settings: Settings, make_session: sessionmaker[Session], store: PhotoStore, sender: TaskSender,
                 upload_id: str, event_id: str) -> dict | None:
    """The task's work, for any process with a database, a store and a sender (the tests' stand-in too)."""
    return chunked_uploads.assemble(lambda: unit_of_work(make_session, sender), store, settings.data_dir / "tmp",
                                    upload_limits(settings), upload_id, event_id, settings.photos_per_task)


@shared_task(bind=True, name=MATCH_RUNNER, autoretry_for=TRANSIENT, retry_backoff=True,
             retry_backoff_max=300, max_retries=8)
def match_runner_task(self, runner_id: str) -> int:
    """A new runner against the faces already in their event (photos to come match themselves)."""
    ctx = get_context(self.app.finishline_settings)
    with unit_of_work(ctx.make_session, _sender(self)) as uow:  # the sender: runner.matched webhooks
        matches = matching.match_runner(uow, runner_id)
    log.info("runner %s: %d matches", runner_id, matches)
    return matches


@shared_task(bind=True, name=REMATCH_EVENT, autoretry_for=TRANSIENT, retry_backoff=True,
             retry_backoff_max=300, max_retries=8)
def rematch_event_task(self, event_id: str) -> int:
    """After a threshold change: the event's photos, one short locked transaction per chunk."""
    ctx = get_context(self.app.finishline_settings)
    return run_rematch(ctx.make_session, event_id)


def run_rematch(make_session, event_id: str) -> int:  # type: ignore[no-untyped-def]
    """Chunks until done; each chunk commits, so a crash resumes from the last one."""
    chunks, more = 0, True
    while more:
        with unit_of_work(make_session) as uow:
            more = matching.rematch_event_chunk(uow, event_id)
        chunks += 1
    log.info("event %s rematched in %d chunks", event_id, chunks)
    return chunks
