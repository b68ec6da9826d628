"""Task names and the sender the API and services use to queue them (by name: no task imports)."""

from __future__ import annotations

from celery import Celery

PROCESS_PHOTO = "finishline.process_photo"
MATCH_RUNNER = "finishline.match_runner"
SEND_RUNNER_EMAIL = "finishline.send_runner_email"
SWEEP_STALE_WORK = "finishline.sweep_stale_work"
DELIVER_WEBHOOK = "finishline.deliver_webhook"


class CelerySender:
    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, task_name: str, *args: object) -> None:
        self.celery.send_task(task_name, args=list(args))
