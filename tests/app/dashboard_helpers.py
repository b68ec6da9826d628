"""Shared by the dashboard tests: an organiser account and a signed-in client."""

from __future__ import annotations

import re

from app.db.session import make_engine, make_sessionmaker, unit_of_work
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
