"""Shared by the dashboard tests: an organiser account and a signed-in client."""

from __future__ import annotations

import re

from app.db import Face, Match
from app.db.session import UnitOfWork, make_engine, make_sessionmaker, unit_of_work
from app.services.accounts import create_user
from tests.conftest import TEST_ORG, organisation_for_tests

PASSWORD = "correct horse battery"


def new_user(settings, email: str = "org@example.com", org: str = TEST_ORG) -> str:
    engine = make_engine(settings.resolved_database_url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        organisation = organisation_for_tests(uow, org)
        create_user(uow, organisation_id=organisation.id, email=email, password=PASSWORD, name="Olga")
    engine.dispose()
    return email


def sign_in(client, email: str, password: str = PASSWORD, next_path: str = "/dashboard"):
    form = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text).group(1)
    return client.post("/login", data={"email": email, "password": password, "login_token": token,
                                       "next": next_path}, follow_redirects=False)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def add_match(uow: UnitOfWork, event_id: str, runner_id: str, photo_id: str) -> None:
    """A face on the photo matched to the runner (rows only: the send page counts and samples them)."""
    face = Face(photo_id=photo_id, event_id=event_id, x1=0, y1=0, x2=10, y2=10, score=0.9, size_px=10,
                landmarks=[], embedding=b"", model_id="m")
    uow.session.add(face)
    uow.session.flush()
    uow.session.add(Match(event_id=event_id, runner_id=runner_id, photo_id=photo_id, face_id=face.id, similarity=0.7))
