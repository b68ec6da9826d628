"""The Celery app, configured from Settings.

Broker: Redis when REDIS_URL is set. Otherwise kombu's filesystem transport (hardened in
worker/fs_broker.py: bad message files are set aside, never fatal): messages are files in a folder
under the data dir, so the API and worker processes on one machine share a queue with no server at
all (README: "Why the filesystem broker"). It drops a message once a worker has read it, like any
broker does on a crash before ack, so the sweeper (SWEEP_STALE_WORK) re-queues work whose message
was lost.
"""

from __future__ import annotations

from celery import Celery

from app.config import Settings, load_settings
from worker import fs_broker
from worker.dispatch import DEFAULT_QUEUE, SWEEP_STALE_WORK, TASK_QUEUES
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
            "polling_interval": 0.2,
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


# `celery -A worker.celery_app worker` and `finishline worker` use this one, built from the env.
app = create_celery(load_settings())
app.conf.include = ["worker.tasks"]
