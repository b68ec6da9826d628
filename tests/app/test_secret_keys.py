"""Issue 12.12: one shared secret (refused when missing outside the embedded setup), key
rotation, links that expire, and HMAC-SHA256 signatures for real."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from datetime import date

import pytest
from itsdangerous import TimestampSigner
from pydantic import ValidationError

from app.config import Settings
from app.db import Event, Runner
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import gallery, tokens
from app.errors import NotFound
from tests.conftest import organisation_for_tests, REPO, api_client, migrated_settings

NEW, OLD = "new-secret-" + "n" * 24, "old-secret-" + "o" * 24


@pytest.mark.parametrize("shared", [{"database_url": "postgresql+psycopg://db/finishline"},
                                    {"redis_url": "redis://queue:6379/0"}])
def test_a_shared_database_or_broker_without_a_secret_key_is_refused(tmp_path, shared):
    with pytest.raises(ValidationError, match="FINISHLINE_SECRET_KEY"):
        Settings(data_dir=tmp_path, **shared)
    assert Settings(data_dir=tmp_path, secret_key=NEW, **shared).signing_keys == (NEW,)
    assert len(Settings(data_dir=tmp_path).signing_keys[0]) >= 32  # embedded: a key file is fine


def test_the_commands_refuse_to_start_with_a_clear_message(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "FINISHLINE_DATA_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "app.cli", "api", "--port", "1"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "FINISHLINE_SECRET_KEY" in done.stderr and "Traceback" not in done.stderr


def test_a_list_of_keys_rotates_first_signs_all_verify(tmp_path):
    settings = Settings(data_dir=tmp_path, secret_key=f"{NEW}, {OLD}")
    assert settings.signing_keys == (NEW, OLD)
    old_link = tokens.make_token(OLD, "gallery", "r1")
    assert tokens.read_token(settings.signing_keys, "gallery", old_link) == "r1"
    new_link = tokens.make_token(settings.signing_keys, "gallery", "r1")
    assert tokens.read_token(NEW, "gallery", new_link) == "r1"  # signed with the first key
    with pytest.raises(NotFound):
        tokens.read_token(OLD, "gallery", new_link)
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, secret_key=f"{NEW},changeme")  # every key must be a real one


def test_signatures_are_hmac_sha256():
    token = tokens.make_token(NEW, "delete", "r1")
    signature = token.rsplit(".", 1)[1]
    assert len(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))) == 32  # SHA-1 gives 20


def _signed_at(monkeypatch, when: float, *args) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: int(when))
        return tokens.make_token(*args)


def test_delete_links_expire_after_30_days(monkeypatch):
    now = time.time()
    fresh = _signed_at(monkeypatch, now - 29 * 86400, NEW, "delete", "r1")
    stale = _signed_at(monkeypatch, now - 31 * 86400, NEW, "delete", "r1")
    assert tokens.read_token(NEW, "delete", fresh) == "r1"
    with pytest.raises(NotFound):
        tokens.read_token(NEW, "delete", stale)


def test_gallery_links_live_as_long_as_the_event_retention(tmp_path, monkeypatch):
    settings = migrated_settings(tmp_path / "data")
    engine = make_engine(settings.resolved_database_url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        uow.session.add(Event(organisation_id=organisation_for_tests(uow).id, id="ev", name="Run", slug="run",
                              match_threshold=0.5, retention_days=10, starts_on=date.today()))
        uow.session.add(Runner(id="r1", event_id="ev", name="Ann", email="ann@example.org"))
    now = time.time()
    within = _signed_at(monkeypatch, now - 9 * 86400, settings.signing_keys, "gallery", "r1")
    past = _signed_at(monkeypatch, now - 11 * 86400, settings.signing_keys, "gallery", "r1")
    with unit_of_work(make_sessionmaker(engine)) as uow:
        assert gallery.runner_for(uow, settings, "gallery", within).id == "r1"
        with pytest.raises(NotFound):
            gallery.runner_for(uow, settings, "gallery", past)
    engine.dispose()
    with api_client(settings, with_key=False) as client:
        assert client.get(f"/g/{within}").status_code == 200
        assert client.get(f"/g/{past}").status_code == 404
