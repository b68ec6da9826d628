"""Photos, matching, e-mail and upload assembly travel on separate queues, and workers consume the
ones named (all of them by default, as under `finishline run`)."""

from __future__ import annotations

import subprocess
import sys

import redis

from tests.conftest import REPO, make_settings
from worker.celery_app import create_celery
from worker.dispatch import (ASSEMBLE_UPLOAD, DEFAULT_QUEUE, MATCH_RUNNER, PROCESS_PHOTO, REMATCH_EVENT,
                             SEND_RUNNER_EMAIL, SWEEP_STALE_WORK, TASK_QUEUES, CelerySender)


def test_each_task_lands_on_its_own_queue_in_redis(tmp_path, redis_url):
    celery = create_celery(make_settings(tmp_path / "data", redis_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    sender = CelerySender(celery)
    for _ in range(3):  # an upload burst
        sender.send(PROCESS_PHOTO, "photo")
    sender.send(MATCH_RUNNER, "runner")
    sender.send(REMATCH_EVENT, "event")
    sender.send(SWEEP_STALE_WORK)
    sender.send(SEND_RUNNER_EMAIL, "delivery")
    sender.send(ASSEMBLE_UPLOAD, "upload", "event")  # a 10 GB zip: behind no photo, before no match
    lengths = {queue: client.llen(queue) for queue in ("photos", "matching", "email", "uploads", "celery")}
    assert lengths == {"photos": 3, "matching": 3, "email": 1, "uploads": 1, "celery": 0}
    client.flushdb()


def test_a_worker_started_without_queues_consumes_every_routed_one():
    from app.cli import build_parser

    # `finishline run` starts its worker this way, so no task sits in a queue nobody reads
    queues = build_parser().parse_args(["worker"]).queues.split(",")
    assert set(TASK_QUEUES.values()) | {DEFAULT_QUEUE} <= set(queues)


def test_filesystem_broker_keeps_the_queues_apart(tmp_path):
    settings = make_settings(tmp_path / "data")
    celery = create_celery(settings)
    CelerySender(celery).send(PROCESS_PHOTO, "photo")
    CelerySender(celery).send(SEND_RUNNER_EMAIL, "delivery")
    names = sorted(p.name for p in (settings.broker_dir / "queue").iterdir())
    assert len(names) == 2 and any("photos" in n for n in names) and any("email" in n for n in names)


def test_worker_refuses_an_unknown_queue(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--queues", "photos,gpu"], cwd=REPO,
                          env={"FINISHLINE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "unknown queue(s) gpu" in done.stderr
