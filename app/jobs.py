"""Background jobs as the app sees them: task names, and the sender interface that queues them.

Services queue work by name through a `TaskSender` (via `UnitOfWork.send_task`, after commit) and
never import Celery or the worker package; the worker side provides the Celery implementation
(worker/dispatch.py) and the tasks (worker/tasks.py). So packages depend in one direction:
worker -> app.
"""

from __future__ import annotations

from typing import Protocol

PROCESS_PHOTO = "finishline.process_photo"
MATCH_RUNNER = "finishline.match_runner"
REMATCH_EVENT = "finishline.rematch_event"
SEND_RUNNER_EMAIL = "finishline.send_runner_email"
SWEEP_STALE_WORK = "finishline.sweep_stale_work"
DELIVER_WEBHOOK = "finishline.deliver_webhook"
ASSEMBLE_UPLOAD = "finishline.assemble_upload"


class TaskSender(Protocol):
    def send(self, task_name: str, *args: object) -> None: ...
