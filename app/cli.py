"""The `finishline` command: run, api, worker, migrate, keys, users, ingest (API.md)."""

from __future__ import annotations

import argparse
import ctypes
import getpass
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from pydantic import ValidationError

from app.config import load_settings
from worker.dispatch import QUEUES

log = logging.getLogger("finishline")


def _migrate(database_url: str) -> None:
    from app.db.migrate import upgrade_to_head

    upgrade_to_head(database_url)


def cmd_migrate(_: argparse.Namespace) -> int:
    settings = load_settings()
    _migrate(settings.resolved_database_url)
    print("database is at the latest migration")
    return 0


@contextmanager
def _operator_uow():
    """A unit of work on the migrated database, for the operator's commands (keys, users)."""
    from app.db.session import make_engine, make_sessionmaker, unit_of_work

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings.resolved_database_url)  # idempotent; lets a fresh install create a key first
    engine = make_engine(settings.resolved_database_url, **settings.engine_options)
    try:
        with unit_of_work(make_sessionmaker(engine)) as uow:
            yield uow
    finally:
        engine.dispose()


def _organisation(uow, slug: str | None, new_name: str):
    """`--org SLUG`, or a new organisation named `new_name` (told on stderr, with its slug)."""
    from app.services import organisations

    if slug:
        return organisations.get_by_slug(uow, slug)
    organisation = organisations.create_organisation(uow, name=new_name)
    print(f"Organisation {organisation.name!r} created, slug {organisation.slug} (use --org {organisation.slug}).",
          file=sys.stderr)
    return organisation


def cmd_create_key(args: argparse.Namespace) -> int:
    from app.services.api_keys import issue_key

    with _operator_uow() as uow:
        organisation = _organisation(uow, args.org, args.name)
        new = issue_key(uow, organisation_id=organisation.id, name=args.name, scope=args.scope,
                        event_ids=args.event or ())
    print(f"API key {args.name!r} ({args.scope}) created. It is shown once; keep it secret:", file=sys.stderr)
    print(new.key)
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise SystemExit("The passwords differ; nothing was created.")
    return first


def cmd_create_user(args: argparse.Namespace) -> int:
    from app.services.accounts import create_user

    password = _read_password()
    with _operator_uow() as uow:
        organisation = _organisation(uow, args.org, args.name or args.email)
        user = create_user(uow, organisation_id=organisation.id, email=args.email, password=password, name=args.name)
    print(f"User {user.email} created in organisation {organisation.slug}; sign in at /login.")
    return 0


def cmd_list_keys(args: argparse.Namespace) -> int:
    from app.services import api_keys, organisations

    with _operator_uow() as uow:
        organisation_id = organisations.get_by_slug(uow, args.org).id if args.org else None
        slugs = organisations.slugs_by_id(uow)
        print("id\torganisation\tscope\tname\tevents\tcreated\trevoked")
        for key in api_keys.list_keys(uow, organisation_id):
            print("\t".join([key.id, slugs.get(key.organisation_id, "?"), key.scope, key.name,
                             ",".join(key.event_ids) or "*", key.created_at.isoformat(timespec="seconds"),
                             key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"]))
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from app.db import ApiKey
    from app.services import api_keys

    key_id = args.key_id.removeprefix(api_keys.PREFIX).split("_")[0]  # an id, or a whole key
    with _operator_uow() as uow:
        key = uow.session.get(ApiKey, key_id)
        if key is None:
            print(f"No key with id {key_id!r}.", file=sys.stderr)
            return 1
        api_keys.revoke(key)
    print(f"Key {key_id} revoked; it answers 401 from now on.")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from app.server import serve

    serve(load_settings(), args.host, args.port)
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
    from app.server import serve

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings.resolved_database_url)
    concurrency = settings.worker_concurrency or min(2, os.cpu_count() or 1)
    # One supervised pool consumes every queue (photos, matching, email, uploads): Celery takes from
    # them in turn, so a match or an e-mail waits for the tasks in flight, never for a backlog of
    # uploads. For separate pools per queue run `finishline worker --queues ...` (README).
    worker = WorkerSupervisor(
        [sys.executable, "-m", "app.cli", "worker", f"--concurrency={concurrency}", "--beat"],
        first_backoff_s=settings.worker_restart_backoff_s,
    )
    worker.start()
    log.warning("API on http://%s:%s", args.host, args.port)
    try:
        serve(settings, args.host, args.port)
    finally:
        worker.stop()
    return 0


class WorkerSupervisor:
    """Keeps one worker process beside the API: if it exits (a crash, an OOM kill, an unrecoverable
    broker error), it is started again after a backoff that doubles while it keeps failing, and the
    log says so. The worker runs the sweeper too (--beat), so that comes back with it."""

    MAX_BACKOFF_S = 60.0
    STABLE_AFTER_S = 60.0  # a worker that ran this long had no start-up problem: back to the first backoff

    def __init__(self, argv: list[str], *, first_backoff_s: float = 1.0) -> None:
        self.argv, self.first_backoff_s = argv, first_backoff_s
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._process = subprocess.Popen(
                self.argv,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the worker ourselves, once
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            log.warning("worker started (pid %s)", self._process.pid)
            return self._process

    def _supervise(self) -> None:
        backoff = self.first_backoff_s
        while (process := self._spawn()) is not None:
            started = time.monotonic()
            code = process.wait()
            _kill_group(process)
            if self._stopping.is_set():
                return
            ran_s = time.monotonic() - started
            if ran_s >= self.STABLE_AFTER_S:
                backoff = self.first_backoff_s
            log.error("worker (pid %s) exited with code %s after %.0f s; restarting it in %.0f s",
                      process.pid, code, ran_s, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.MAX_BACKOFF_S)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None:
            _stop(process)
        self._thread.join(timeout=5)


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish the current task
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    _kill_group(worker)


def _kill_group(worker: subprocess.Popen) -> None:
    """What a worker that is gone leaves behind: killed with SIGKILL (an OOM kill), Celery's pool
    processes outlive it, each holding the networks' memory. They are in its process group (it
    leads one, start_new_session), which no other process can take while any of them lives."""
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # none left


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

    p = sub.add_parser("create-key", help="create an API key (no --org: a new organisation named NAME)")
    p.add_argument("name")
    p.add_argument("--org", help="the slug of an existing organisation")
    p.add_argument("--scope", choices=["organiser", "partner"], default="organiser")
    p.add_argument("--event", action="append", metavar="EVENT_ID",
                   help="a partner key's event (repeat; none: every event of the organisation)")
    p.set_defaults(func=cmd_create_key)

    p = sub.add_parser("create-user", help="create a dashboard account (password on stdin or prompted)")
    p.add_argument("email")
    p.add_argument("--org", help="the slug of an existing organisation (none: a new one)")
    p.add_argument("--name")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("list-keys", help="list API keys (never their secrets)")
    p.add_argument("--org", help="only this organisation's")
    p.set_defaults(func=cmd_list_keys)

    p = sub.add_parser("revoke-key", help="revoke an API key: it answers 401 from then on")
    p.add_argument("key_id", help="the key's id (as list-keys shows) or the key itself")
    p.set_defaults(func=cmd_revoke_key)

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
    from app.errors import AppError

    try:
        if args.command != "ingest":  # ingest is an HTTP client: the server's settings are not its business
            load_settings()  # a bad environment stops every command here, in words, before anything starts
    except ValidationError as exc:
        problems = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        print(f"finishline: invalid settings: {problems}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except AppError as exc:  # unknown --org, weak password, ...: the reason, not a traceback
        print(f"finishline {args.command}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
