"""The Celery side of app.jobs: a TaskSender that queues tasks by name (no task imports)."""

from __future__ import annotations

from celery import Celery

from app.jobs import (  # noqa: F401 (re-exported)
    DELIVER_WEBHOOK, MATCH_RUNNER, PROCESS_PHOTO, SEND_RUNNER_EMAIL, SWEEP_STALE_WORK,
)


class CelerySender:
    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, task_name: str, *args: object) -> None:
        self.celery.send_task(task_name, args=list(args))
