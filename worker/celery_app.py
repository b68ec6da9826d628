"""The Celery app, configured from Settings.

Broker: Redis when REDIS_URL is set. Otherwise kombu's filesystem transport (hardened in
worker/fs_broker.py: bad message files are set aside, never fatal): messages are files in a folder
under the data dir, so the API and worker processes on one machine share a queue with no server at
all (README: "Why the filesystem broker"). It drops a message once a worker has read it, like any
broker does on a crash before ack, so the sweeper (SWEEP_STALE_WORK) re-queues work whose message
was lost.

`celery -A worker.celery_app worker` and `finishline worker` use `app`, which is built from the
environment when first asked for (see `__getattr__`), never at import.
"""

from __future__ import annotations

import threading

from celery import Celery

from app.config import Settings, load_settings
from app.jobs import SWEEP_STALE_WORK
from worker import fs_broker
from worker.dispatch import DEFAULT_QUEUE, TASK_QUEUES
from worker.heartbeat import Heartbeat


def create_celery(settings: Settings) -> Celery:
    celery = Celery("finishline")
    if settings.redis_url:
        celery.conf.broker_url = settings.redis_url
        celery.conf.result_backend = settings.redis_url
        # unacked messages of a dead worker come back after this long (the sweeper is usually sooner)
        celery.conf.broker_transport_options = {"visibility_timeout": 3600}
    else:
        queue_dir = settings.broker_dir / "queue"
        queue_dir.mkdir(parents=True, exist_ok=True)
        celery.conf.broker_url = fs_broker.register()
        celery.conf.broker_transport_options = {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(settings.broker_dir / "control"),
            # with one task in hand (prefetch 1) the worker polls again only after this long once
            # it is done: 0.2 s left a race photo's worker idle a third of the time (bench/e2e.py);
            # idle, 0.05 s costs the worker 0.6% of a core
            "polling_interval": 0.05,
        }
        celery.conf.worker_enable_remote_control = False  # no fanout replies on this transport
    celery.conf.update(
        task_acks_late=True,  # a task is acknowledged once done, so a lost worker means redelivery
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_default_queue=DEFAULT_QUEUE,
        beat_schedule={"sweep-stale-work": {"task": SWEEP_STALE_WORK, "schedule": settings.sweep_every_s}},
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    celery.steps["worker"].add(Heartbeat)  # read by /readyz: is a worker alive?
    celery.finishline_settings = settings
    return celery


def create_worker_app(settings: Settings) -> Celery:
    """The app a worker process runs: the API's configuration plus the task modules."""
    celery = create_celery(settings)
    celery.conf.include = ["worker.tasks"]
    return celery


_worker_app: Celery | None = None
_worker_app_lock = threading.Lock()


def __getattr__(name: str) -> Celery:
    """`worker.celery_app.app`, built from the environment on first use, not at import: importing
    this module (as app.main does) must read no variable and create no folder (PEP 562)."""
    global _worker_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _worker_app_lock:
        if _worker_app is None:
            _worker_app = create_worker_app(load_settings())
        return _worker_app
