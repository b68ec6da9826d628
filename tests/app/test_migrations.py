from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from app.db.migrate import alembic_config, upgrade_to_head

TABLES = {"events", "photos", "faces", "runners", "matches", "match_rejections", "deliveries",
          "delivered_photos", "api_keys", "upload_sessions"}


def _check(url: str) -> None:
    upgrade_to_head(url)
    upgrade_to_head(url)  # idempotent
    engine = create_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
    command.check(alembic_config(url))  # the tables match the SQLAlchemy models exactly


def test_migrations_on_sqlite(tmp_path):
    _check(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_migrations_on_postgres(postgres_url):
    _check(postgres_url)
