from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from app.db.migrate import alembic_config, upgrade_to_head

TABLES = {"events", "photos", "faces", "runners", "matches", "match_rejections", "deliveries",
          "delivered_photos", "api_keys", "webhook_endpoints", "webhook_events", "webhook_deliveries",
          "upload_sessions", "dashboard_sessions"}


def _check(url: str) -> None:
    upgrade_to_head(url)
    upgrade_to_head(url)  # idempotent
    engine = create_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
    command.check(alembic_config(url))  # the tables match the SQLAlchemy models exactly


def test_migrations_on_sqlite(tmp_path):
    _check(f"sqlite:///{tmp_path / 'm.db'}")


def test_webhooks_migration_goes_down_and_up_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    command.downgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    assert not {"webhook_endpoints", "webhook_events", "webhook_deliveries"} & set(inspect(engine).get_table_names())
    assert "processed_through" not in {c["name"] for c in inspect(engine).get_columns("events")}
    engine.dispose()
    _check(url)


@pytest.mark.postgres
def test_migrations_on_postgres(postgres_url):
    _check(postgres_url)


def _upgrade_from_0004_with_rows(url: str) -> None:
    """An install from before organisations: its events and keys land in one organisation, nothing lost."""
    from sqlalchemy import text

    from app.db.session import make_engine, make_sessionmaker, unit_of_work
    from app.services import api_keys

    config = alembic_config(url)
    command.upgrade(config, "0004")
    secret = "old-secret"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO api_keys (id, name, secret_hash, created_at) "
                          "VALUES ('k1', 'old key', :h, CURRENT_TIMESTAMP)"), {"h": api_keys._hash(secret)})
        for event_id in ("e1", "e2"):
            conn.execute(text("INSERT INTO events (id, name, slug, match_threshold, created_at) "
                              "VALUES (:id, 'Old run', :slug, 0.5, CURRENT_TIMESTAMP)"),
                         {"id": event_id, "slug": f"old-{event_id}"})
        conn.execute(text("INSERT INTO runners (id, event_id, name, email, consent_at, created_at) "
                          "VALUES ('r1', 'e1', 'Ada', 'ada@example.org', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    engine.dispose()

    upgrade_to_head(url)
    command.check(config)
    engine = create_engine(url)
    with engine.connect() as conn:
        [(org_id, slug)] = conn.execute(text("SELECT id, slug FROM organisations")).all()
        assert slug == "default"
        assert conn.execute(text("SELECT organisation_id, scope FROM api_keys")).all() == [(org_id, "organiser")]
        assert conn.execute(text("SELECT id, organisation_id FROM events ORDER BY id")).all() == [
            ("e1", org_id), ("e2", org_id)]
        assert conn.execute(text("SELECT id, event_id FROM runners")).all() == [("r1", "e1")]
    engine.dispose()
    engine = make_engine(url)
    with unit_of_work(make_sessionmaker(engine)) as uow:  # the old key still works, as an organiser
        key = api_keys.authenticate(uow, f"fl_k1_{secret}")
        assert (key.organisation_id, key.scope, key.event_ids) == (org_id, "organiser", [])
    engine.dispose()


def test_upgrade_from_0004_keeps_events_and_keys_on_sqlite(tmp_path):
    _upgrade_from_0004_with_rows(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_upgrade_from_0004_keeps_events_and_keys_on_postgres(postgres_url):
    from sqlalchemy import text

    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = "finishline_upgrade_" + postgres_url.rsplit("_", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        _upgrade_from_0004_with_rows(url)
    finally:
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("down_to, table, column", [("0011", "runners", "changed_version"),
                                                   ("0012", "upload_sessions", "attempts")])
def test_a_column_migration_goes_down_and_up_again(tmp_path, down_to, table, column):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    command.downgrade(alembic_config(url), down_to)
    engine = create_engine(url)
    assert column not in {c["name"] for c in inspect(engine).get_columns(table)}
    engine.dispose()
    _check(url)
