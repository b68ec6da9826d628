"""Shared fixtures: settings built per test, real PostgreSQL/Redis, real photos from ../shared/faces."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from app.config import Settings
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.main import create_app
from app.db import Organisation
from app.db.session import UnitOfWork
from app.services.api_keys import issue_key

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"
POSTGRES_ADMIN_URL = os.environ.get("FINISHLINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FINISHLINE_TEST_REDIS", "redis://127.0.0.1:6379/9")


@pytest.fixture(autouse=True)
def fresh_matching_caches() -> Iterator[None]:
    """Each test starts with empty per-process matching caches: they are keyed by event id and
    version, and tests that name their own ids ("ev", version 1) would meet each other's entries."""
    from app.services.face_matrix import face_matrices
    from app.services.matching import runner_cache

    runner_cache.clear()
    face_matrices.clear()
    yield


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():
        pytest.skip(f"the shared face set is not at {FACES}")
    return FACES


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = {"data_dir": data_dir, "secret_key": "test-secret-" + "x" * 20, **overrides}
    return Settings(**values)


class RecordingSender:
    """Stands in for Celery where a test only checks what would be queued."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple]] = []

    def send(self, task_name: str, *args: object) -> None:
        self.sent.append((task_name, args))


def migrated_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a fresh embedded data dir whose database is at the latest migration."""
    s = make_settings(data_dir, **overrides)
    s.data_dir.mkdir(parents=True)
    upgrade_to_head(s.resolved_database_url)
    return s


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return migrated_settings(tmp_path / "data")


TEST_ORG = "tests"  # the organisation of new_api_key() and api_client() unless told otherwise


def organisation_for_tests(uow: UnitOfWork, slug: str = TEST_ORG) -> Organisation:
    """The organisation with this slug, created on first use: rows a test inserts directly go in it
    (`Event(organisation_id=organisation_for_tests(uow).id, ...)`) so the default key sees them."""
    organisation = uow.session.scalar(select(Organisation).where(Organisation.slug == slug))
    if organisation is None:
        organisation = Organisation(name=slug, slug=slug)
        uow.session.add(organisation)
        uow.session.flush()
    return organisation


def new_api_key(settings: Settings, *, org: str = TEST_ORG, scope: str = "organiser",
                event_ids: tuple[str, ...] | list[str] = ()) -> str:
    """A key of organisation `org` (a slug; created if new). A second organisation: org="other";
    a partner: scope="partner", event_ids=[...] (empty: every event of the organisation)."""
    engine = make_engine(settings.resolved_database_url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        organisation = organisation_for_tests(uow, org)
        key = issue_key(uow, organisation_id=organisation.id, name=f"tests-{scope}", scope=scope,
                        event_ids=event_ids).key
    engine.dispose()
    return key


@contextmanager
def api_client(settings: Settings, *, with_key: bool = True, key: str | None = None) -> Iterator[TestClient]:
    """The API in-process, tasks recorded instead of sent; with an organiser key of TEST_ORG unless
    told not to (`key=new_api_key(settings, org="other")` for another organisation's)."""
    app = create_app(settings)
    app.state.sender = RecordingSender()
    if with_key and key is None:
        key = new_api_key(settings)
    headers = {"Authorization": f"Bearer {key}"} if with_key else {}
    with TestClient(app, headers=headers) as test_client:
        yield test_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with api_client(settings) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped afterwards."""
    name = f"finishline_test_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_ADMIN_URL}: {exc}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except Exception as exc:
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess needs to see the same settings as `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINISHLINE_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"FINISHLINE_DATA_DIR": str(settings.data_dir), "FINISHLINE_SECRET_KEY": settings.secret_key,
                "PYTHONUNBUFFERED": "1"})
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    env["FINISHLINE_STALE_AFTER_S"] = str(settings.stale_after_s)
    env["FINISHLINE_SWEEP_EVERY_S"] = str(settings.sweep_every_s)
    return env


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_for_http(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{log_path.read_text()[-3000:]}")


def wait_until_processed(client, event_id: str, expected: int, timeout: float = 180) -> dict:
    """Poll the event until `expected` photos are done or failed; returns the last event body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.get(f"/api/v1/events/{event_id}").json()
        stats = event["stats"]
        if stats["photos_done"] + stats["photos_failed"] >= expected:
            return event
        time.sleep(0.5)
    raise AssertionError(f"photos not processed in {timeout}s: {event['stats']}")


def stop_process(process: subprocess.Popen, sig=None, timeout: float = 40) -> int:
    import signal

    if process.poll() is None:
        process.send_signal(sig or signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def live_server(app, *, lifespan: str = "auto") -> Iterator[str]:
    """`app` served by uvicorn on a loopback port in a thread; yields its base URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           lifespan=lifespan))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def finishline_run(data_dir: Path, *, extra_env: dict[str, str] | None = None, **overrides) -> Iterator[dict]:
    """`finishline run` as a user starts it, on a free loopback port, with an organiser key.

    Yields {"client" (httpx, with the key), "process", "log", "key", "base", "env"}; Ctrl-C at the end.
    """
    import signal

    settings = make_settings(data_dir, **overrides)
    env = service_env(settings) | (extra_env or {})
    key = subprocess.run([sys.executable, "-m", "app.cli", "create-key", "e2e"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    port = free_port()
    log_path = data_dir.parent / "run.log"
    process = start_process(["run", "--port", str(port)], env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", process, log_path)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            yield {"client": client, "process": process, "log": log_path, "key": key, "base": base, "env": env}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
