from __future__ import annotations

from alembic import context

from app.config import load_settings
from app.db import Base
from app.db.session import make_engine

config = context.config
# `finishline migrate` passes the URL in; plain `alembic upgrade head` reads it from the settings.
url = config.attributes.get("database_url") or load_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        # batch mode lets ALTER-style migrations run on SQLite too
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
