"""The Celery side of app.jobs: a TaskSender that queues tasks by name (no task imports)."""

from __future__ import annotations

from celery import Celery

from app.jobs import (  # noqa: F401 (re-exported)
    ASSEMBLE_UPLOAD, DELIVER_WEBHOOK, MATCH_RUNNER, PROCESS_PHOTO, REMATCH_EVENT, SEND_RUNNER_EMAIL, SWEEP_STALE_WORK,
)

# Four queues, so a burst of uploads never delays a runner's matches or e-mails: photo tasks
# (CNN work, GPU machines) on `photos`, matching and the sweeper on `matching`, SMTP and webhook
# deliveries on `email`, and the expansion of finished dashboard uploads on `uploads` (minutes of
# disk and store I/O for a large zip: neither a GPU slot nor a matching slot should wait on it,
# and its report should not wait behind a backlog of photos).
# `finishline run` has one pool consume all four (app/cli.py); `finishline worker --queues` splits them.
PHOTOS_QUEUE, MATCHING_QUEUE, EMAIL_QUEUE, UPLOADS_QUEUE = "photos", "matching", "email", "uploads"
QUEUES = (PHOTOS_QUEUE, MATCHING_QUEUE, EMAIL_QUEUE, UPLOADS_QUEUE)
TASK_QUEUES = {
    PROCESS_PHOTO: PHOTOS_QUEUE,
    ASSEMBLE_UPLOAD: UPLOADS_QUEUE,
    MATCH_RUNNER: MATCHING_QUEUE,
    REMATCH_EVENT: MATCHING_QUEUE,
    SWEEP_STALE_WORK: MATCHING_QUEUE,
    SEND_RUNNER_EMAIL: EMAIL_QUEUE,
    DELIVER_WEBHOOK: EMAIL_QUEUE,  # outgoing messages: e-mail and webhooks, both slow network I/O
}
DEFAULT_QUEUE = MATCHING_QUEUE  # a task with no route here: short database work


class CelerySender:
    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, task_name: str, *args: object) -> None:
        self.celery.send_task(task_name, args=list(args))
