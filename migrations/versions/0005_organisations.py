"""organisations, dashboard users, scoped keys; every existing event and key into one organisation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:24:22.870269
"""
from datetime import datetime, timezone
import os
import time

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# The organisation an existing install's events and keys move into (rename it later if you like).
DEFAULT_ORGANISATION = {"name": "Default organisation", "slug": "default"}


def upgrade() -> None:
    op.create_table('organisations',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('slug', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisations')),
    sa.UniqueConstraint('slug', name=op.f('uq_organisations_slug'))
    )
    op.create_table('users',
    sa.Column('organisation_id', sa.String(length=32), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_users_organisation_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_organisation_id'), ['organisation_id'], unique=False)

    # Nullable first, filled by the data migration below, then NOT NULL.
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('organisation_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('scope', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('event_ids', sa.JSON(), nullable=True))
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('organisation_id', sa.String(length=32), nullable=True))

    _move_existing_rows_into_one_organisation()

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('organisation_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column('scope', existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column('event_ids', existing_type=sa.JSON(), nullable=False)
        batch_op.create_index(batch_op.f('ix_api_keys_organisation_id'), ['organisation_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_api_keys_organisation_id_organisations'), 'organisations', ['organisation_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.alter_column('organisation_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index(batch_op.f('ix_events_organisation_id_id'), ['organisation_id', 'id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_events_organisation_id_organisations'), 'organisations', ['organisation_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrolled_by_key_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_runners_event_id_email'), ['event_id', 'email'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_runners_enrolled_by_key_id_api_keys'), 'api_keys', ['enrolled_by_key_id'], ['id'], ondelete='SET NULL')


def _move_existing_rows_into_one_organisation() -> None:
    """Before organisations, every key was an organiser of every event: keep exactly that."""
    conn = op.get_bind()
    keys = sa.table('api_keys', sa.column('organisation_id'), sa.column('scope'), sa.column('event_ids', sa.JSON))
    events = sa.table('events', sa.column('organisation_id'))
    has_rows = (conn.scalar(sa.select(sa.func.count()).select_from(keys))
                or conn.scalar(sa.select(sa.func.count()).select_from(events)))
    if not has_rows:
        return
    organisations = sa.table('organisations', sa.column('id'), sa.column('name'), sa.column('slug'),
                             sa.column('created_at', sa.DateTime(timezone=True)))
    organisation_id = f"{time.time_ns():016x}{os.urandom(5).hex()}"  # app.db.base.new_id, frozen here
    conn.execute(organisations.insert().values(id=organisation_id, created_at=datetime.now(timezone.utc),
                                               **DEFAULT_ORGANISATION))
    conn.execute(keys.update().values(organisation_id=organisation_id, scope='organiser', event_ids=[]))
    conn.execute(events.update().values(organisation_id=organisation_id))


def downgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_runners_enrolled_by_key_id_api_keys'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_runners_event_id_email'))
        batch_op.drop_column('enrolled_by_key_id')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_events_organisation_id_organisations'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_events_organisation_id_id'))
        batch_op.drop_column('organisation_id')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_api_keys_organisation_id_organisations'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_keys_organisation_id'))
        batch_op.drop_column('event_ids')
        batch_op.drop_column('scope')
        batch_op.drop_column('organisation_id')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_organisation_id'))

    op.drop_table('users')
    op.drop_table('organisations')
