"""Dashboard accounts: argon2 hashes, never the password; the same answer for unknown e-mail and wrong password."""

from __future__ import annotations

import pytest

from app.auth import Caller
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.errors import Conflict, Unauthorized, Unprocessable
from app.services.accounts import authenticate_user, create_user
from tests.conftest import organisation_for_tests


@pytest.fixture
def sessions(settings):
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_a_user_signs_in_with_the_password_stored_only_as_an_argon2_hash(sessions):
    with unit_of_work(sessions) as uow:
        org = organisation_for_tests(uow)
        user = create_user(uow, organisation_id=org.id, email=" Ada@Example.org", password="correct horse", name="Ada")
    assert user.password_hash.startswith("$argon2id$") and "correct horse" not in user.password_hash
    with unit_of_work(sessions) as uow:
        signed_in = authenticate_user(uow, email="ada@example.ORG", password="correct horse")
        assert signed_in.id == user.id
        assert Caller.for_user(signed_in) == Caller(organisation_id=org.id, scope="organiser",
                                                    event_ids=frozenset(), user_id=user.id)
    for email, password in (("ada@example.org", "wrong horse"), ("bob@example.org", "correct horse")):
        with unit_of_work(sessions) as uow, pytest.raises(Unauthorized) as error:
            authenticate_user(uow, email=email, password=password)
        assert error.value.code == "invalid_credentials"


def test_one_account_per_address_and_no_short_passwords(sessions):
    with unit_of_work(sessions) as uow:
        org = organisation_for_tests(uow)
        create_user(uow, organisation_id=org.id, email="ada@example.org", password="long enough")
    with unit_of_work(sessions) as uow, pytest.raises(Conflict):
        create_user(uow, organisation_id=org.id, email="ADA@example.org", password="long enough")
    with unit_of_work(sessions) as uow, pytest.raises(Unprocessable):
        create_user(uow, organisation_id=org.id, email="bob@example.org", password="short")
