"""The `finishline` command: run, api, worker, migrate, create-key, ingest (API.md)."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys

from app.config import load_settings
from worker.dispatch import EMAIL_QUEUE, MATCHING_QUEUE, PHOTOS_QUEUE, QUEUES

log = logging.getLogger("finishline")


def _migrate(database_url: str) -> None:
    from app.db.migrate import upgrade_to_head

    upgrade_to_head(database_url)


def cmd_migrate(_: argparse.Namespace) -> int:
    settings = load_settings()
    _migrate(settings.resolved_database_url)
    print("database is at the latest migration")
    return 0


def cmd_create_key(args: argparse.Namespace) -> int:
    from app.db.session import make_engine, make_sessionmaker, unit_of_work
    from app.services.api_keys import create_key

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings.resolved_database_url)  # idempotent; lets a fresh install create a key first
    engine = make_engine(settings.resolved_database_url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        key = create_key(uow, name=args.name)
    engine.dispose()
    print(f"API key {args.name!r} created. It is shown once; keep it secret:", file=sys.stderr)
    print(key)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port,
                log_level="info", proxy_headers=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.celery_app import app

    settings = app.finishline_settings
    concurrency = args.concurrency or settings.worker_concurrency or os.cpu_count() or 1
    queues = [q for q in args.queues.split(",") if q]
    unknown = set(queues) - set(QUEUES)
    if unknown or not queues:
        raise SystemExit(f"unknown queue(s) {', '.join(sorted(unknown)) or '(none)'}; choose from {', '.join(QUEUES)}")
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={args.loglevel}",
            f"--queues={','.join(queues)}", f"--hostname={'-'.join(queues)}@%h",
            "--without-gossip", "--without-mingle"]
    if args.beat:
        argv += ["--beat", f"--schedule={settings.data_dir / 'celerybeat-schedule'}"]
    app.worker_main(argv)
    return 0


def _die_with_parent() -> None:
    """Runs in the worker child before exec: Linux sends it SIGTERM if `finishline run` dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings.resolved_database_url)
    concurrency = settings.worker_concurrency or min(2, os.cpu_count() or 1)
    # Photos get their own pool; matching and e-mail a second, small one that never waits
    # behind a burst of uploads (and never loads the face networks).
    pools = [["--queues", PHOTOS_QUEUE, f"--concurrency={concurrency}"],
             ["--queues", f"{MATCHING_QUEUE},{EMAIL_QUEUE}", "--concurrency=1", "--beat"]]
    workers = [subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", *pool],
        start_new_session=True,  # Ctrl-C reaches us only; we stop the workers ourselves, once
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    ) for pool in pools]
    log.warning("workers started (pids %s); API on http://%s:%s", [w.pid for w in workers], args.host, args.port)
    try:
        uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port, log_level="info")
    finally:
        for worker in workers:
            _stop(worker)
    return 0


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish the current task
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def cmd_ingest(args: argparse.Namespace) -> int:
    from app.ingest import ingest

    return ingest(args.event_id, args.paths, api_url=args.api_url, api_key=args.api_key)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finishline", description="Race photos to the runners in them.")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, helptext in (("run", "API and a worker together, embedded defaults"), ("api", "API server only")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(func=cmd_run if name == "run" else cmd_api)

    p = sub.add_parser("worker", help="a Celery worker only")
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--beat", action="store_true", help="also run the periodic sweeper (one worker per site)")
    p.add_argument("--queues", default=",".join(QUEUES),
                   help=f"comma list of queues to consume (default all: {','.join(QUEUES)})")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_worker)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    p = sub.add_parser("create-key", help="create an organiser API key")
    p.add_argument("name")
    p.set_defaults(func=cmd_create_key)

    p = sub.add_parser("ingest", help="upload files, folders and zips to an event")
    p.add_argument("event_id")
    p.add_argument("paths", nargs="+")
    p.add_argument("--api-url", default=os.environ.get("FINISHLINE_API_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("FINISHLINE_API_KEY"),
                   help="organiser key (or FINISHLINE_API_KEY)")
    p.set_defaults(func=cmd_ingest)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
