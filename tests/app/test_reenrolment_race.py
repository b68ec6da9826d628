"""Two enrolments with the same e-mail at the same moment make one runner (the event lock).

A service unit test: the selfie analysis is stubbed (the networks are tested elsewhere).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from app.db import Event, Runner
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.schemas.runner import RunnerCreate
from app.services import privacy, runners
from tests.conftest import RecordingSender, make_settings, organisation_for_tests


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sessions(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        upgrade_to_head(url)
    else:
        settings = make_settings(tmp_path / "data")
        settings.data_dir.mkdir(parents=True)
        url = settings.resolved_database_url
        upgrade_to_head(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_racing_enrolments_of_one_email_make_one_runner(sessions, monkeypatch, tmp_path):
    with unit_of_work(sessions) as uow:
        event = Event(organisation_id=organisation_for_tests(uow).id, name="Race", slug=f"race-{time.time_ns()}",
                      match_threshold=0.5)
        uow.session.add(event)
    face = SimpleNamespace(embedding=np.ones(128, np.float32) / np.sqrt(128))  # analysed before enrol
    first_looked = threading.Event()
    real_find = runners.find_by_email

    def slow_find(uow, event_id, email):
        found = real_find(uow, event_id, email)
        if threading.current_thread().name == "first":
            first_looked.set()
            time.sleep(0.5)  # the second enrolment arrives while the first has not committed
        return found

    monkeypatch.setattr(runners, "find_by_email", slow_find)
    results: dict[str, runners.Enrolment] = {}

    def enrol(name: str, email: str) -> None:
        form = RunnerCreate(name=name, email=email, consent=True)
        with unit_of_work(sessions, RecordingSender()) as uow:
            results[name] = runners.enrol(uow, event.id, form, face, "stub", privacy.Consent.on_page(None))

    first = threading.Thread(target=enrol, args=("first", "ada@example.org"), name="first")
    second = threading.Thread(target=enrol, args=("second", "ADA@example.org"), name="second")
    first.start()
    assert first_looked.wait(30)
    second.start()
    first.join(60)
    second.join(60)
    assert results["first"].created and not results["second"].created
    assert results["first"].runner.id == results["second"].runner.id
    with unit_of_work(sessions) as uow:
        [runner] = uow.session.query(Runner).filter_by(event_id=event.id).all()
        assert runner.name == "second"  # the later enrolment's details
