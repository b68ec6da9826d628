"""Issue 12.14: importing the app has no side effects, services know tasks only by name through a
small sender interface, and the units of work services open themselves are the listed ones."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SERVICES = REPO / "app" / "services"
# Orchestrations that own their transactions, and why (README "Transactions"): each commits a
# claim before slow work (a CNN run, an SMTP conversation, an HTTP call, one stored file), so no transaction is
# held through it and other workers see the claim.
OPENS_ITS_OWN_UNITS_OF_WORK = {"processing.py", "notify.py", "uploads.py", "webhooks.py"}


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def test_importing_the_app_and_the_worker_reads_no_environment_and_creates_nothing(tmp_path):
    data_dir = tmp_path / "data"
    code = "import app.main, app.cli, worker.celery_app, worker.tasks"
    done = _run(code, tmp_path, FINISHLINE_DATA_DIR=str(data_dir), FINISHLINE_SECRET_KEY="changeme",
                FINISHLINE_PHOTOS_PER_TASK="many", REDIS_URL="not a url")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not data_dir.exists() and list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))


def test_the_celery_app_is_built_on_first_use_from_the_environment(tmp_path):
    data_dir = tmp_path / "data"
    ok = _run("from worker.celery_app import app; print(app.conf.broker_url, sorted(app.conf.include))",
              tmp_path, FINISHLINE_DATA_DIR=str(data_dir))
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "finishline-fs://" in ok.stdout and "worker.tasks" in ok.stdout  # worker/fs_broker.py
    bad = _run("from worker.celery_app import app", tmp_path, FINISHLINE_SECRET_KEY="changeme")
    assert bad.returncode != 0 and "FINISHLINE_SECRET_KEY" in bad.stderr


def test_services_never_import_the_worker_or_celery(tmp_path):
    done = _run("import sys, pkgutil, importlib, app.services as s\n"
                "for m in pkgutil.iter_modules(s.__path__): importlib.import_module(f'app.services.{m.name}')\n"
                "print(sorted(n for n in sys.modules if n.split('.')[0] in ('worker', 'celery')))", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_only_the_listed_orchestrations_open_units_of_work_and_no_service_commits():
    for path in SERVICES.glob("*.py"):
        calls = _calls(path)
        assert "commit" not in calls, f"{path.name} commits; the unit of work's owner does"
        if "unit_of_work" in calls or "open_uow" in calls:
            assert path.name in OPENS_ITS_OWN_UNITS_OF_WORK, f"{path.name} opens units of work: list it and say why"
